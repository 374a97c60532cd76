"""Inference benchmark: faces/s of the tutorial's way (one ``model.predict`` per face) against
our worker's batched LiteRT call, on the same shipped model and in the same run; plus the
tutorial's own CNN served its way, and the per-face cost of messages (encode + Redis) in the
worker path.

    python -m benchmarks inference [--quick]      or      python -m benchmarks.inference

The tutorial CNN (``architectures.build("seed")`` + softmax) runs with random, untrained
weights: its speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (  # noqa: E402
    DEFAULT_REDIS_URL,
    Throughput,
    delete_prefix,
    finish,
    machine_info,
    measure,
    ratio,
    redis_client,
    section,
    table,
    unique_prefix,
)
from fer_pipeline.settings import Settings  # noqa: E402

BATCHES = (1, 8, 32, 128)
OVERHEAD_SMALL_BATCH = 4  # what light traffic gives (two cameras' frames)
LONE_FRAMES = 50  # frames the overhead benchmark publishes one at a time, before the back-to-back ones


def _faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


# -- the tutorial's way ---------------------------------------------------------------------------------
def per_face_predict(model, faces: np.ndarray, seconds: float) -> Throughput:
    """The tutorial's webcam loop: ``model.predict`` on a (1, 48, 48, 1) array per face."""
    it = iter(range(10**9))

    def one() -> None:
        x = faces[next(it) % len(faces)].astype(np.float32)[None, :, :, None]
        model.predict(x, verbose=0)

    return measure(one, items_per_call=1, min_seconds=seconds, min_calls=10, warmup_calls=3)


def keras_batched(model, faces: np.ndarray, batch: int, seconds: float) -> Throughput:
    """The same Keras model called directly on a batch (no ``predict`` loop machinery)."""
    x = faces[:batch].astype(np.float32)[..., None]
    return measure(lambda: model(x, training=False), items_per_call=batch, min_seconds=seconds, min_calls=3)


def tutorial_cnn():
    """The tutorial's CNN with a softmax head and random (untrained) weights."""
    import keras

    from fer_pipeline.trainer.architectures import build

    return keras.Sequential([build("seed"), keras.layers.Softmax(name="probabilities")], name="seed_softmax")


# -- our way -------------------------------------------------------------------------------------------------
def litert_matrix(model_json: Path, variants: list[tuple[str, bool, int]], faces: np.ndarray, seconds: float,
                  batches, rounds: int = 3) -> dict[str, dict[int, Throughput]]:
    """Every (variant, batch) cell, measured in ``rounds`` interleaved slices so that a change in
    background load hits all cells alike and their ratios stay fair."""
    from fer_pipeline.model import load_predictor

    preds = {key: load_predictor(model_json, "litert", threads=threads, int8=int8) for key, int8, threads in variants}
    acc: dict[str, dict[int, list[float]]] = {key: {b: [0, 0, 0.0] for b in batches} for key in preds}
    for _ in range(rounds):
        for key, pred in preds.items():
            for b in batches:
                x = faces[:b]
                t = measure(lambda pred=pred, x=x: pred.predict(x), items_per_call=b, min_seconds=seconds / rounds,
                            min_calls=2)
                cell = acc[key][b]
                cell[0], cell[1], cell[2] = cell[0] + t.calls, cell[1] + t.items, cell[2] + t.seconds
    return {key: {b: Throughput(int(c), int(i), s) for b, (c, i, s) in cells.items()} for key, cells in acc.items()}


def litert_file_batches(path: Path, *, threads: int, faces: np.ndarray, seconds: float,
                        batches=BATCHES) -> dict[int, Throughput]:
    """A bare .tflite file (no model.json) through the same predictor class."""
    from fer_pipeline.model import LiteRTPredictor, ModelInfo

    info = ModelInfo(path.parent / "model.json", path.stem, (), {"tflite": path.name}, {})
    pred = LiteRTPredictor(info, threads=threads)
    return {b: measure(lambda b=b: pred.predict(faces[:b]), items_per_call=b, min_seconds=seconds, min_calls=5)
            for b in batches}


def mixed_batches(model_json: Path, faces: np.ndarray, seconds: float, max_batch: int, rounds: int = 3) -> dict:
    """Effective faces/s when batch sizes vary as live traffic makes them (1..max_batch), with the
    predictor's exact-size calls against padding each batch to the next power of two."""
    from fer_pipeline.model import load_predictor

    pred = load_predictor(model_json, "litert")
    sizes = np.random.default_rng(7).integers(1, max_batch + 1, 10_000).tolist()

    def padded(x: np.ndarray) -> np.ndarray:
        n = len(x)
        bucket = 1 << (n - 1).bit_length()
        pad = np.zeros((bucket - n, 48, 48), np.uint8)
        return pred.predict(np.concatenate([x, pad]) if bucket != n else x)[:n]

    totals = {"exact": [0, 0.0], "padded_pow2": [0, 0.0]}
    pos = 0
    for _ in range(rounds):
        for name, fn in (("exact", pred.predict), ("padded_pow2", padded)):
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds / rounds:
                b = sizes[pos % len(sizes)]
                pos += 1
                fn(faces[:b])
                n += b
            totals[name][0] += n
            totals[name][1] += time.perf_counter() - t0
    return {name: {"faces": n, "seconds": sec, "faces_per_s": n / sec} for name, (n, sec) in totals.items()}


# -- messages -------------------------------------------------------------------------------------------------
class InstantPredictor:
    """A model that costs nothing, so the worker's remaining time is pure message overhead."""

    model_id = "instant"

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.full((len(crops), 7), 1 / 7, np.float32)


class _Timed:
    """Wraps a bound method, adding its wall time to ``totals[name]`` (to split Redis from CPU work)."""

    def __init__(self, fn, totals: dict[str, float], name: str) -> None:
        self.fn, self.totals, self.name = fn, totals, name

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.totals[self.name] = self.totals.get(self.name, 0.0) + time.perf_counter() - t0


def message_overhead(settings: Settings, n: int, faces_per_frame: int = 2) -> dict:
    """Per-face cost of the message path around the model, against the real Redis.

    Producer side: the camera's crop encoding (``FaceCrop.pack``) and its publisher, handed
    ``n / faces_per_frame`` frames back to back, as a camera with frames ready does; frames
    that queue while a round trip is in flight share the next one. A lone frame's round trip
    is timed too. Worker side: the real ``InferenceWorker`` loop (read, decode, stack, label,
    publish+ack) with a model that takes no time.
    """
    from fer_pipeline.transport import Transport

    transport = Transport.connect(settings)
    try:
        payloads, encode_s = _encoded_crops(n, faces_per_frame)
        frames = [payloads[i:i + faces_per_frame] for i in range(0, n, faces_per_frame)]
        producer = _publish_frames(transport, settings, frames)
        counters, worker_s, redis_s = _worker_loop(transport, settings, n)
        rtt = measure(transport.ping, items_per_call=1, min_seconds=0.3, min_calls=100)
    finally:
        delete_prefix(redis_client(settings), settings.redis.prefix)
        transport.close()
    labelled = counters["crops_labelled"]
    return {
        "faces": n, "faces_per_frame": faces_per_frame, "worker_batch": settings.worker.max_batch,
        "labelled": labelled, "batches": counters["batches"],
        "producer_encode_us_per_face": 1e6 * encode_s / n,
        **producer,
        "worker_us_per_face": 1e6 * worker_s / max(1, labelled),
        "worker_redis_us_per_face": 1e6 * sum(v for k, v in redis_s.items() if k != "label_encode") / max(1, labelled),
        "worker_label_encode_us_per_face": 1e6 * redis_s.get("label_encode", 0.0) / max(1, labelled),
        "worker_redis_split_us_per_face": {k: 1e6 * v / max(1, labelled) for k, v in redis_s.items()
                                           if k != "label_encode"},
        "redis_ping_rtt_us": 1e6 * rtt.seconds / rtt.calls,
    }


def _encoded_crops(n: int, faces_per_frame: int) -> tuple[list[bytes], float]:
    """``n`` crops encoded as the camera does (``FaceCrop.pack``); returns them and the seconds it took."""
    from fer_pipeline.messages import FaceCrop

    pixels = _faces(64, seed=1)
    t0 = time.perf_counter()
    payloads = [
        FaceCrop.pack(pixels[i % 64], camera_id="bench", run_id="r", frame_index=i // faces_per_frame,
                      face_index=i % faces_per_frame, faces_in_frame=faces_per_frame, track_id=i,
                      bbox=(0, 0, 48, 48), captured_at=time.time(), published_at=time.time(), truth="happy")
        for i in range(n)
    ]
    return payloads, time.perf_counter() - t0


def _publish_frames(transport, settings: Settings, frames: list[list[bytes]]) -> dict[str, float]:
    """The camera's publisher: the first ``LONE_FRAMES`` frames one at a time, the rest back to
    back; returns the producer's figures (per face back to back, frames per round trip, a lone frame)."""
    from fer_pipeline.producers.publisher import Outgoing, Publisher

    publisher = Publisher(transport, settings, ["bench"])
    publisher.start()
    # One frame alone: the latency a quiet camera sees (a full round trip, nothing to share it).
    t0 = time.perf_counter()
    lone = 0
    for frame in frames[:LONE_FRAMES]:
        publisher.submit(Outgoing("bench", frame))
        publisher.drain("bench", timeout=10)
        lone += 1
    lone_s = (time.perf_counter() - t0) / lone
    trips_before = publisher.round_trips
    t0 = time.perf_counter()
    for frame in frames[LONE_FRAMES:]:
        while not publisher.submit(Outgoing("bench", frame)):  # queue full: let it drain (never here)
            publisher.drain("bench", timeout=10)
    publisher.drain("bench", timeout=60)
    publish_s = time.perf_counter() - t0
    publish_trips = publisher.round_trips - trips_before
    published_faces = sum(len(f) for f in frames[LONE_FRAMES:])
    publisher.close(timeout=10)
    return {"producer_publish_us_per_face": 1e6 * publish_s / published_faces,
            "producer_frames_per_round_trip": len(frames[LONE_FRAMES:]) / max(1, publish_trips),
            "producer_lone_frame_publish_us": 1e6 * lone_s}


def _worker_loop(transport, settings: Settings, n: int) -> tuple[dict[str, int], float, dict[str, float]]:
    """The real ``InferenceWorker`` loop with a model that takes no time, until it has labelled ``n``
    crops (60 s at most); returns its counters, its seconds outside the model, and the seconds of
    each of its Redis calls and of its label encoding (``"label_encode"``)."""
    from fer_pipeline.messages import Label
    from fer_pipeline.workers.inference import InferenceWorker

    worker = InferenceWorker(settings, transport, InstantPredictor(), ident="bench-overhead")
    worker.setup()
    # The worker's Redis calls and label encoding, timed apart from the rest of its loop.
    redis_s: dict[str, float] = {}
    for name in ("read_group", "publish", "publish_then_read", "ack", "autoclaim"):
        setattr(transport, name, _Timed(getattr(transport, name), redis_s, name))
    original = Label.__dict__["pack_batch"]  # the staticmethod itself, to put back as it was
    Label.pack_batch = _Timed(Label.pack_batch, redis_s, "label_encode")  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        deadline = t0 + 60
        while worker.counters["crops_labelled"] < n and time.perf_counter() < deadline:
            worker.step()
        worker.finish()
        worker_s = time.perf_counter() - t0 - worker.infer_s
    finally:
        Label.pack_batch = original  # type: ignore[method-assign]
    return worker.counters, worker_s, redis_s


# -- the run ----------------------------------------------------------------------------------------------------
def run(*, model: Path | None = None, seconds: float = 2.0, quick: bool = False, redis_url: str = DEFAULT_REDIS_URL,
        seed_tflite: bool = True, out_dir: Path | None = None) -> dict:
    """Run every inference measurement, print tables, write ``inference.json``; returns the results."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = Settings(_env_file=None)
    model = Path(model) if model is not None else settings.worker.model
    if quick:
        seconds = min(seconds, 0.5)
        seed_tflite = False
    faces = _faces(max(BATCHES))
    machine = machine_info(model)
    _print_model(machine)
    results: dict = {"settings": {"seconds_per_cell": seconds, "quick": quick,
                                  "worker_defaults": settings.worker.model_dump(mode="json")}}
    tut, seed = tutorial_section(model, faces, seconds)
    results["tutorial"] = {k: v.as_dict() for k, v in tut.items()}
    base = tut["shipped_per_face_predict"].items_per_s
    worker_key, worker_batch = _worker_default(settings, model), settings.worker.max_batch
    batches = sorted({*BATCHES, worker_batch, OVERHEAD_SMALL_BATCH})
    lite = results["litert"] = litert_section(model, machine, batches, seconds, base, worker_key)
    results["mixed_batch_sizes"] = mixed_section(model, batches, seconds, worker_batch)
    if worker_key not in lite:  # e.g. int8 configured but the model ships without it
        raise RuntimeError(f"the worker's default ({worker_key}) was not measured")
    if seed_tflite:
        seed_base = tut["seed_per_face_predict"].items_per_s
        results["seed_litert_int8_t1"] = seed_litert_section(seed, faces, seconds, seed_base)
    overheads = results["message_overhead"] = overhead_section(settings, redis_url, lite, worker_key, quick)
    results["headline"] = headline(tut, lite, overheads, worker_key, worker_batch)
    finish("inference", results, machine, out_dir)
    return results


def _print_model(machine: dict) -> None:
    """One line: the model measured, its size, and the machine's load as the run starts."""
    print(f"model: {machine['model'].get('model_id')} ({machine['model'].get('architecture')}, "
          f"{(machine['model'].get('macs_per_face') or 0) / 1e6:.1f} M MAC/face); load {machine['load_avg_1_5_15']}",
          flush=True)


def _worker_default(settings: Settings, model: Path) -> str:
    """The LiteRT variant the worker runs with these settings, as a matrix key (e.g. ``float_t1``)."""
    from fer_pipeline.model import read_info, resolve_int8

    worker_int8 = resolve_int8(settings.worker.int8, read_info(model))
    return f"{'int8' if worker_int8 else 'float'}_t{settings.worker.threads}"


def tutorial_section(model: Path, faces: np.ndarray, seconds: float) -> tuple[dict[str, Throughput], object]:
    """The tutorial's per-face ``predict`` and a direct batch-32 call, on the shipped model and on the
    tutorial's CNN; prints them against (a), the shipped model's per-face rate; returns them and the CNN."""
    section("Tutorial's way: one model.predict per face (Keras, TensorFlow's own threading)")
    import keras

    from fer_pipeline.model import read_info

    shipped = keras.saving.load_model(read_info(model).file("keras"), safe_mode=True, compile=False)
    seed = tutorial_cnn()
    tut = {
        "shipped_per_face_predict": per_face_predict(shipped, faces, seconds * 2),
        "seed_per_face_predict": per_face_predict(seed, faces, seconds * 2),
        "shipped_keras_batch32": keras_batched(shipped, faces, 32, seconds),
        "seed_keras_batch32": keras_batched(seed, faces, 32, seconds),
    }
    base = tut["shipped_per_face_predict"].items_per_s
    print(table(["way", "faces/s", "ms/face", "x (a)"],
                [[k, v.items_per_s, v.ms_per_item, ratio(v.items_per_s, base)] for k, v in tut.items()], digits=2))
    return tut, seed


def litert_section(model: Path, machine: dict, batches: list[int], seconds: float, base: float,
                   worker_key: str) -> dict[str, dict[str, dict]]:
    """The worker's LiteRT call on the shipped model, float and (where shipped) int8, one and two
    threads, at each batch size; prints them against ``base``; returns {variant: {batch: figures}}."""
    section("Our worker's call: LiteRT, batched (shipped model)")
    variants = [("float_t1", False, 1), ("float_t2", False, 2)]
    if machine["model"].get("int8_available"):
        variants += [("int8_t1", True, 1), ("int8_t2", True, 2)]
    matrix = litert_matrix(model, variants, _faces(max(batches)), seconds, batches)
    rows, lite = [], {}
    for key, cells in matrix.items():
        lite[key] = {str(b): t.as_dict() for b, t in cells.items()}
        tag = " (worker default)" if key == worker_key else ""
        for b, t in cells.items():
            rows.append([f"{key}{tag}", b, t.items_per_s, t.ms_per_item, ratio(t.items_per_s, base)])
    print(table(["litert", "batch", "faces/s", "ms/face", "x (a)"], rows, digits=2))
    return lite


def mixed_section(model: Path, batches: list[int], seconds: float, worker_batch: int) -> dict:
    """Batch sizes as live traffic makes them, exact-size calls against power-of-two padding; prints
    and returns ``mixed_batches``' figures."""
    section(f"Batch sizes as traffic makes them (uniform 1..{worker_batch}): exact-size calls vs power-of-two padding")
    mixed = mixed_batches(model, _faces(max(batches)), seconds * 2, worker_batch)
    print(table(["calls", "faces/s", "x padded"], [[k, v["faces_per_s"], ratio(v["faces_per_s"],
                mixed["padded_pow2"]["faces_per_s"])] for k, v in mixed.items()], digits=2))
    return mixed


def seed_litert_section(seed, faces: np.ndarray, seconds: float, seed_base: float) -> dict[str, dict]:
    """The tutorial's CNN converted to int8 TFLite and served our way; prints it against ``seed_base``,
    the CNN's per-face ``predict`` rate; returns {batch: figures}."""
    section("The tutorial's CNN served our way (LiteRT, int8, batched)")
    from fer_pipeline.trainer.export import to_tflite

    with tempfile.TemporaryDirectory() as tmp:
        path = to_tflite(seed, Path(tmp) / "seed_int8.tflite", int8=True)
        res = litert_file_batches(path, threads=1, faces=faces, seconds=seconds, batches=(1, 32, 128))
    print(table(["batch", "faces/s", "x seed per-face predict"],
                [[b, t.items_per_s, ratio(t.items_per_s, seed_base)] for b, t in res.items()], digits=2))
    return {str(b): t.as_dict() for b, t in res.items()}


def overhead_section(settings: Settings, redis_url: str, lite: dict, worker_key: str, quick: bool) -> dict[str, dict]:
    """``message_overhead`` at a small and at the full worker batch, each set against the worker's
    own inference time at that batch; prints the table; returns {batch: figures} (empty without Redis)."""
    section("Message overhead per face (real Redis, 2 faces per frame), small and full worker batches")
    overheads: dict[str, dict] = {}
    for batch in sorted({OVERHEAD_SMALL_BATCH, settings.worker.max_batch}):
        try:
            s = settings.with_updates(redis={"url": redis_url, "prefix": unique_prefix("inference")},
                                      worker={"max_batch": batch})
            o = message_overhead(s, 512 if quick else 4096)
        except Exception as e:  # noqa: BLE001 - no Redis: report and carry on with the rest
            print(f"skipped: {type(e).__name__}: {e}")
            break
        overheads[str(batch)] = _with_shares(o, 1e6 / lite[worker_key][str(batch)]["items_per_s"])
    if overheads:
        _print_overheads(overheads, worker_key)
    return overheads


def _with_shares(o: dict, inference_us: float) -> dict:
    """``o`` (one ``message_overhead`` result) with its totals and their shares of ``inference_us``."""
    o["inference_us_per_face"] = inference_us
    o["total_us_per_face"] = (o["producer_encode_us_per_face"] + o["producer_publish_us_per_face"]
                              + o["worker_us_per_face"])
    o["share_of_inference"] = o["total_us_per_face"] / o["inference_us_per_face"]
    # The target's definition: encoding plus Redis round trips (decode/validation excluded).
    o["encode_and_redis_us_per_face"] = (o["producer_encode_us_per_face"] + o["producer_publish_us_per_face"]
                                         + o["worker_label_encode_us_per_face"] + o["worker_redis_us_per_face"])
    o["encode_and_redis_share"] = o["encode_and_redis_us_per_face"] / o["inference_us_per_face"]
    return o


def _print_overheads(overheads: dict[str, dict], worker_key: str) -> None:
    """The overhead table, one column per batch size, and the Redis PING round trip."""
    parts = [("producer: FaceCrop encode (FaceCrop.pack)", "producer_encode_us_per_face"),
             ("producer: publisher, frames back to back (round trips shared)", "producer_publish_us_per_face"),
             ("producer: frames per round trip, back to back", "producer_frames_per_round_trip"),
             ("producer: one frame alone, its round trip (us per frame)", "producer_lone_frame_publish_us"),
             ("worker: Redis calls (read; publish labels + ack/delete crops)", "worker_redis_us_per_face"),
             ("worker: labels built and encoded (Label.pack_batch)", "worker_label_encode_us_per_face"),
             ("worker: whole loop around the model (the two above included)", "worker_us_per_face"),
             ("encoding + Redis round trips", "encode_and_redis_us_per_face"),
             ("everything around the model (+ decode, validation, batching)", "total_us_per_face"),
             (f"inference ({worker_key})", "inference_us_per_face")]
    print(table(["us/face", *(f"batch {b}" for b in overheads)],
                [[name, *(o[key] for o in overheads.values())] for name, key in parts]
                + [["encoding + round trips / inference (target < 10%)",
                    *(f"{100 * o['encode_and_redis_share']:.1f}%" for o in overheads.values())],
                   ["everything around the model / inference",
                    *(f"{100 * o['share_of_inference']:.1f}%" for o in overheads.values())]]))
    rtt = next(iter(overheads.values()))["redis_ping_rtt_us"]
    print(f"\nRedis PING round trip {rtt:.0f} us")


def headline(tut: dict[str, Throughput], lite: dict, overheads: dict[str, dict], worker_key: str,
             worker_batch: int) -> dict:
    """The run's figures in one place: the worker's default and the best LiteRT cell against the
    tutorial's per-face rates, the message shares, and whether the targets are met."""
    base, seed_fps = tut["shipped_per_face_predict"].items_per_s, tut["seed_per_face_predict"].items_per_s
    worker_fps = lite[worker_key][str(worker_batch)]["items_per_s"]
    best_key, best_b = max(((k, b) for k in lite for b in lite[k]), key=lambda kb: lite[kb[0]][kb[1]]["items_per_s"])
    overhead, small = overheads.get(str(worker_batch)), overheads.get(str(OVERHEAD_SMALL_BATCH))
    out = {
        "tutorial_shipped_per_face_fps": base,
        "tutorial_seed_per_face_fps": seed_fps,
        "worker_default": f"{worker_key} batch {worker_batch}",
        "worker_default_fps": worker_fps,
        "worker_vs_tutorial_same_model": ratio(worker_fps, base),
        "worker_vs_tutorial_cnn_its_way": ratio(worker_fps, seed_fps),
        "best": f"{best_key} batch {best_b}",
        "best_fps": lite[best_key][best_b]["items_per_s"],
        "best_vs_tutorial_same_model": ratio(lite[best_key][best_b]["items_per_s"], base),
        "encode_and_redis_share_full_batch": overhead["encode_and_redis_share"] if overhead else None,
        "encode_and_redis_share_batch4": small["encode_and_redis_share"] if small else None,
        "all_message_work_share_full_batch": overhead["share_of_inference"] if overhead else None,
    }
    out["target_worker_100x_tutorial_same_model"] = (out["worker_vs_tutorial_same_model"] or 0) >= 100
    out["target_encode_and_redis_under_10pct"] = None if overhead is None else overhead["encode_and_redis_share"] < 0.10
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="model.json (default: the settings' worker model)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement cell")
    ap.add_argument("--quick", action="store_true", help="short cells, no seed TFLite conversion (a smoke run)")
    ap.add_argument("--no-seed-tflite", action="store_true", help="skip converting the tutorial CNN to TFLite")
    ap.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    ap.add_argument("--out-dir", type=Path, help="where to write inference.json (default benchmarks/results)")
    a = ap.parse_args(argv)
    run(model=a.model, seconds=a.seconds, quick=a.quick, redis_url=a.redis_url, seed_tflite=not a.no_seed_tflite,
        out_dir=a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
