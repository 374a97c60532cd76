"""Inference benchmark: faces/s of the tutorial's way (one ``model.predict`` per face) against
our worker's batched LiteRT call, on the same shipped model and in the same run; plus the
tutorial's own CNN served its way, and the per-face cost of messages (encode + Redis) in the
worker path.

    fer-pipeline bench inference [--quick]      or      python -m benchmarks.inference

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
    DEFAULT_REDIS_URL, Throughput, delete_prefix, machine_info, measure, ratio, section, table, unique_prefix,
    write_result,
)
from fer_pipeline.settings import Settings  # noqa: E402

BATCHES = (1, 8, 32, 128)
OVERHEAD_BATCH = 32


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
def litert_batches(model_json: Path, *, int8: bool, threads: int, faces: np.ndarray, seconds: float,
                   batches=BATCHES) -> dict[int, Throughput]:
    from fer_pipeline.model import load_predictor

    pred = load_predictor(model_json, "litert", threads=threads, int8=int8)
    out = {}
    for b in batches:
        x = faces[:b]
        out[b] = measure(lambda x=x: pred.predict(x), items_per_call=b, min_seconds=seconds, min_calls=5)
    return out


def litert_file_batches(path: Path, *, threads: int, faces: np.ndarray, seconds: float,
                        batches=BATCHES) -> dict[int, Throughput]:
    """A bare .tflite file (no model.json) through the same predictor class."""
    from fer_pipeline.model import LiteRTPredictor, ModelInfo

    info = ModelInfo(path.parent / "model.json", path.stem, (), {"tflite": path.name}, {})
    pred = LiteRTPredictor(info, threads=threads)
    return {b: measure(lambda b=b: pred.predict(faces[:b]), items_per_call=b, min_seconds=seconds, min_calls=5)
            for b in batches}


# -- messages -------------------------------------------------------------------------------------------------
class InstantPredictor:
    """A model that costs nothing, so the worker's remaining time is pure message overhead."""

    model_id = "instant"

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.full((len(crops), 7), 1 / 7, np.float32)


def message_overhead(settings: Settings, n: int, faces_per_frame: int = 2) -> dict:
    """Per-face cost of the message path around the model, against the real Redis.

    Producer side: FaceCrop encode + one publish per frame (``faces_per_frame`` crops).
    Worker side: the real ``InferenceWorker`` loop (read, decode, stack, label, encode,
    publish, ack+delete) with a model that takes no time.
    """
    from fer_pipeline.messages import BBox, FaceCrop
    from fer_pipeline.transport import Transport
    from fer_pipeline.workers.inference import InferenceWorker

    transport = Transport.connect(settings)
    try:
        pixels = _faces(64, seed=1)
        t0 = time.perf_counter()
        payloads = [
            FaceCrop.from_pixels(pixels[i % 64], camera_id="bench", run_id="r", frame_index=i // faces_per_frame,
                                 face_index=i % faces_per_frame, faces_in_frame=faces_per_frame, track_id=i,
                                 bbox=BBox(x=0, y=0, w=48, h=48), captured_at=time.time(),
                                 published_at=time.time(), truth="happy").encode()
            for i in range(n)
        ]
        encode_s = time.perf_counter() - t0
        keys = transport.keys
        t0 = time.perf_counter()
        for i in range(0, n, faces_per_frame):
            transport.publish(keys.crops, payloads[i:i + faces_per_frame], settings.streams.crops_maxlen,
                              count_all_trimmed=True)
        publish_s = time.perf_counter() - t0

        worker = InferenceWorker(settings, transport, InstantPredictor(), ident="bench-overhead")
        worker.setup()
        t0 = time.perf_counter()
        deadline = t0 + 60
        while worker.counters["crops_labelled"] < n and time.perf_counter() < deadline:
            worker.step()
        worker.finish()
        worker_s = time.perf_counter() - t0 - worker.infer_s
        labelled = worker.counters["crops_labelled"]
        rtt = measure(transport.client.ping, items_per_call=1, min_seconds=0.3, min_calls=100)
    finally:
        delete_prefix(transport.client, settings.redis.prefix)
        transport.close()
    return {
        "faces": n, "faces_per_frame": faces_per_frame, "worker_batch": settings.worker.max_batch,
        "labelled": labelled, "batches": worker.counters["batches"],
        "producer_encode_us_per_face": 1e6 * encode_s / n,
        "producer_publish_us_per_face": 1e6 * publish_s / n,
        "worker_us_per_face": 1e6 * worker_s / max(1, labelled),
        "redis_ping_rtt_us": 1e6 * rtt.seconds / rtt.calls,
    }


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
    print(f"model: {machine['model'].get('model_id')} ({machine['model'].get('architecture')}, "
          f"{(machine['model'].get('macs_per_face') or 0) / 1e6:.1f} M MAC/face); load {machine['load_avg_1_5_15']}",
          flush=True)
    results: dict = {"settings": {"seconds_per_cell": seconds, "quick": quick,
                                  "worker_defaults": settings.worker.model_dump(mode="json")}}

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
    results["tutorial"] = {k: v.as_dict() for k, v in tut.items()}
    del shipped

    section("Our worker's call: LiteRT, batched (shipped model)")
    variants = [("float", False, 1), ("float", False, 2)]
    if machine["model"].get("int8_available"):
        variants += [("int8", True, 1), ("int8", True, 2)]
    default = ("int8" if settings.worker.int8 else "float", settings.worker.int8, settings.worker.threads)
    rows, lite = [], {}
    for name, int8, threads in variants:
        res = litert_batches(model, int8=int8, threads=threads, faces=faces, seconds=seconds)
        key = f"{name}_t{threads}"
        lite[key] = {str(b): t.as_dict() for b, t in res.items()}
        tag = " (worker default)" if (name, int8, threads) == default else ""
        for b, t in res.items():
            rows.append([f"{key}{tag}", b, t.items_per_s, t.ms_per_item, ratio(t.items_per_s, base)])
    print(table(["litert", "batch", "faces/s", "ms/face", "x (a)"], rows, digits=2))
    results["litert"] = lite

    worker_key = f"{default[0]}_t{default[2]}"
    worker_batch = min(settings.worker.max_batch, max(BATCHES))
    bucket = min((b for b in BATCHES if b >= worker_batch), default=max(BATCHES))
    worker_fps = lite[worker_key][str(bucket)]["items_per_s"]
    best_key, best_b = max(((k, b) for k in lite for b in lite[k]), key=lambda kb: lite[kb[0]][kb[1]]["items_per_s"])

    if seed_tflite:
        section("The tutorial's CNN served our way (LiteRT, int8, batched)")
        from fer_pipeline.trainer.export import to_tflite

        with tempfile.TemporaryDirectory() as tmp:
            path = to_tflite(seed, Path(tmp) / "seed_int8.tflite", int8=True)
            res = litert_file_batches(path, threads=1, faces=faces, seconds=seconds, batches=(1, 32, 128))
        seed_base = tut["seed_per_face_predict"].items_per_s
        print(table(["batch", "faces/s", "x seed per-face predict"],
                    [[b, t.items_per_s, ratio(t.items_per_s, seed_base)] for b, t in res.items()], digits=2))
        results["seed_litert_int8_t1"] = {str(b): t.as_dict() for b, t in res.items()}

    section(f"Message overhead per face (real Redis, worker batch {OVERHEAD_BATCH}, 2 faces per frame)")
    overhead = None
    try:
        s = settings.with_updates(redis={"url": redis_url, "prefix": unique_prefix("inference")},
                                  worker={"max_batch": OVERHEAD_BATCH, "max_wait_ms": 5.0})
        overhead = message_overhead(s, 512 if quick else 4096)
    except Exception as e:  # noqa: BLE001 - no Redis: report and carry on with the rest
        print(f"skipped: {type(e).__name__}: {e}")
    if overhead is not None:
        per_face_inf_us = 1e6 / lite[worker_key][str(OVERHEAD_BATCH)]["items_per_s"]
        total = (overhead["producer_encode_us_per_face"] + overhead["producer_publish_us_per_face"]
                 + overhead["worker_us_per_face"])
        overhead["inference_us_per_face"] = per_face_inf_us
        overhead["total_us_per_face"] = total
        overhead["share_of_inference"] = total / per_face_inf_us
        print(table(["part", "us/face"], [
            ["producer: FaceCrop encode", overhead["producer_encode_us_per_face"]],
            ["producer: publish (Lua XADD, 1 round trip per frame)", overhead["producer_publish_us_per_face"]],
            ["worker: read + decode + stack + label + publish + ack", overhead["worker_us_per_face"]],
            ["total message overhead", total],
            [f"inference ({worker_key}, batch {OVERHEAD_BATCH})", per_face_inf_us],
        ]))
        print(f"\noverhead = {100 * overhead['share_of_inference']:.1f}% of per-face inference "
              f"(target < 10%); Redis PING round trip {overhead['redis_ping_rtt_us']:.0f} us")
    results["message_overhead"] = overhead

    headline = {
        "tutorial_shipped_per_face_fps": base,
        "tutorial_seed_per_face_fps": tut["seed_per_face_predict"].items_per_s,
        "worker_default": f"{worker_key} batch {bucket}",
        "worker_default_fps": worker_fps,
        "worker_vs_tutorial_same_model": ratio(worker_fps, base),
        "worker_vs_tutorial_cnn_its_way": ratio(worker_fps, tut["seed_per_face_predict"].items_per_s),
        "best": f"{best_key} batch {best_b}",
        "best_fps": lite[best_key][best_b]["items_per_s"],
        "best_vs_tutorial_same_model": ratio(lite[best_key][best_b]["items_per_s"], base),
        "message_overhead_share": overhead["share_of_inference"] if overhead else None,
    }
    section("Headline")
    print(table(["figure", "value"], [[k, v] for k, v in headline.items()], digits=2))
    results["headline"] = headline
    results["machine"] = machine
    path = write_result("inference", results, out_dir)
    print(f"\nwrote {path}")
    return results


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
