"""Bad input: poisoned messages on every stream of a running pipeline (each dead-lettered with
its reason while the processes go on), property-based fuzzing of the decoder and of the
worker, a model that disagrees with its metadata, and bad command lines for every role."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
import subprocess
import sys
import time

import fakeredis
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fer_pipeline.errors import MessageError, ModelError
from fer_pipeline.messages import BBox, FaceCrop, Frame, Label, decode
from fer_pipeline.model import load_predictor
from fer_pipeline.settings import DEFAULT_MODEL_DIR
from fer_pipeline.streams import WORKERS_GROUP, StreamKeys
from fer_pipeline.transport import Transport
from fer_pipeline.workers.inference import InferenceWorker
from tests.conftest import make_crop_pixels, make_settings
from tests.faults.conftest import client_for, log_rows, stats, wait_alive, wait_until

MAX_PAYLOAD = 16_384


def crop(i: int = 0, **over) -> FaceCrop:
    fields = dict(camera_id="cam", run_id="r", frame_index=i, face_index=0, faces_in_frame=1, track_id=1,
                  bbox=BBox(x=0, y=0, w=48, h=48), captured_at=time.time(), published_at=time.time())
    fields.update(over)
    return FaceCrop.from_pixels(make_crop_pixels(i), **fields)


def mutated(msg, **changes) -> bytes:
    """A valid message's map with some fields replaced (``None`` removes the field)."""
    raw = msgpack.unpackb(msg.encode(), raw=False)
    for k, v in changes.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return msgpack.packb(raw, use_bin_type=True)


def jpeg_header(width: int, height: int) -> bytes:
    """The first bytes of a baseline JPEG declaring ``width`` x ``height`` (a decompression bomb's header)."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\x00" * 64


def label_for(c: FaceCrop) -> Label:
    probs = np.full(7, 0.1, np.float32)
    probs[3] = 0.4
    return Label.for_crop(c, probs, model_id="m", worker_id="w", inferred_at=time.time())


CROP_POISON = {  # payload -> words its dead-letter reason must contain
    "malformed": (b"\xc1\x00garbage", "malformed msgpack"),
    "not a map": (msgpack.packb([1, 2, 3]), "must be a map"),
    "schema v2": (mutated(crop(), v=2), "unknown schema version 2"),
    "missing field": (mutated(crop(), bbox=None), "bbox"),
    "crop too small": (mutated(crop(), crop=b"\x00" * 100), "48x48"),
    "crop float32": (mutated(crop(), crop=np.zeros((48, 48), np.float32).tobytes()), "48x48"),
    "crop as text": (mutated(crop(), crop="x" * 2304), "crop"),
    "oversized": (b"\x00" * (MAX_PAYLOAD + 1), "exceeds"),
    "wrong kind": (label_for(crop()).encode(), "expected a FaceCrop"),
    "negative frame": (mutated(crop(), frame_index=-1), "frame_index"),
}
LABEL_POISON = {
    "nan probabilities": (mutated(label_for(crop()), probabilities=[math.nan] * 7), "finite"),
    "inf probabilities": (mutated(label_for(crop()), probabilities=[math.inf] + [0.0] * 6), "finite"),
    "unnormalised": (mutated(label_for(crop()), probabilities=[0.5] * 7), "sum to 1"),
    "unknown emotion": (mutated(label_for(crop()), emotion="smug"), "emotion"),
}
GOOD_FRAME = Frame(camera_id="cam", run_id="r", frame_index=0, captured_at=0.0, faces=0, scale=1.0, fps=30.0,
                   jpeg=b"")  # jpeg replaced below
FRAME_POISON = {
    "not an image": (mutated(GOOD_FRAME, jpeg=b"hello"), "not a JPEG"),
    "bomb header": (mutated(GOOD_FRAME, jpeg=jpeg_header(30_000, 30_000)), "exceeds max_frame_pixels"),
    "truncated jpeg": (mutated(GOOD_FRAME, jpeg=jpeg_header(64, 48)), "cannot be decoded"),
}


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_poisoned_streams_are_dead_lettered_and_every_role_keeps_going(cluster, redis_settings, record):
    s = redis_settings.with_updates(streams={"max_payload_bytes": MAX_PAYLOAD}, consumer={"label_wait_ms": 50})
    cluster.settings = s
    prefix = s.redis.prefix
    r = client_for(s)
    t = Transport.connect(s)
    try:
        logger = cluster.start("logger", "logger", "--ident", "log")
        display = cluster.start("display", "display", "--ident", "disp")
        worker = cluster.start("worker", "worker", "--ident", "w")
        r.sadd(t.keys.cameras, "cam")
        wait_alive(r, prefix, {"logger:log", "display:disp", "worker:w"}, [logger, display, worker])
        t.publish(t.keys.crops, [p for p, _ in CROP_POISON.values()], 1000)
        t.publish(t.keys.labels, [p for p, _ in LABEL_POISON.values()], 1000)
        t.publish(t.keys.frames("cam"), [p for p, _ in FRAME_POISON.values()], 1000)
        good = [crop(i).encode() for i in range(1, 11)]
        t.publish(t.keys.crops, good, 1000)

        # Label poison is read by both consumers (two groups): each parks its own copy.
        expected_dead = len(CROP_POISON) + 2 * len(LABEL_POISON) + len(FRAME_POISON)
        wait_until(lambda: stats(r, prefix).get("dead_letters", 0) >= expected_dead
                   and len(log_rows(s.consumer.db)) >= len(good), 60, "dead letters and the good crops logged")
        time.sleep(0.5)  # nothing more may arrive
        for p in (worker, logger, display):
            assert p.alive, f"{p.name} died: {p.log()[-3000:]}"
        dead = [{k.decode(): v for k, v in f.items()} for _, f in r.xrange(t.keys.dead)]
        assert stats(r, prefix)["dead_letters"] == len(dead) == expected_dead
        # A dead letter keeps a bounded prefix of its payload, with the whole payload's size and hash.
        by_payload: dict[bytes, list[str]] = {}
        for d in dead:
            by_payload.setdefault(d["sha256"], []).append(d["reason"].decode())
            assert len(d["payload"]) <= s.streams.dead_payload_bytes and int(d["size"]) >= len(d["payload"])
        for name, (payload, words) in {**CROP_POISON, **LABEL_POISON, **FRAME_POISON}.items():
            reasons = by_payload.get(hashlib.sha256(payload).hexdigest().encode(), [])
            assert reasons and all(words in why for why in reasons), (name, reasons)
        assert len(log_rows(s.consumer.db)) == len(good)  # the good ones went through, once
        for p in (worker, logger, display):
            assert p.stop() == 0
            assert "Traceback" not in p.log()
        assert t.backlog(t.keys.crops, WORKERS_GROUP) == (0, 0)
        record(poison_crops=len(CROP_POISON), poison_labels=len(LABEL_POISON), poison_frames=len(FRAME_POISON),
               dead_letters=len(dead), good_crops=len(good), rows_in_log=len(log_rows(s.consumer.db)),
               reasons=sorted({why for whys in by_payload.values() for why in whys}))
    finally:
        t.close()


# -- property-based: no input crashes the decoder or a worker ---------------------------------
VALID = msgpack.unpackb(crop().encode(), raw=False)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                    st.text(max_size=20), st.binary(max_size=3000))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                                max_size=4), max_leaves=8)


@st.composite
def near_valid(draw) -> bytes:
    """A valid crop's map with a few fields replaced, removed or added: deep into validation."""
    raw = dict(VALID)
    for key in draw(st.lists(st.sampled_from([*VALID, "extra"]), max_size=3)):
        if draw(st.booleans()):
            raw[key] = draw(values)
        else:
            raw.pop(key, None)
    return msgpack.packb(raw, use_bin_type=True)


payloads = st.one_of(st.binary(max_size=4000), near_valid(),
                     values.map(lambda v: msgpack.packb(v, use_bin_type=True)))


@hsettings(max_examples=300, deadline=None)
@given(payloads)
def test_decoder_raises_only_message_errors(payload):
    try:
        msg = decode(payload, max_bytes=MAX_PAYLOAD)
    except MessageError as e:
        assert e.reason and "\n" not in e.reason
    else:
        assert msg.v == 1


class Uniform:
    model_id = "uniform"

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.full((len(crops), 7), 1 / 7, np.float32)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(payloads, st.just(b"good")), min_size=1, max_size=12))
def test_no_input_crashes_a_worker_and_every_entry_is_accounted_for(tmp_path, batch):
    s = make_settings(tmp_path).with_updates(worker={"max_batch": 8, "max_wait_ms": 0},
                                             streams={"max_payload_bytes": MAX_PAYLOAD})
    t = Transport(fakeredis.FakeRedis(), StreamKeys(s.redis.prefix), s)
    batch = [crop(i).encode() if p == b"good" else p for i, p in enumerate(batch)]
    t.publish(t.keys.crops, batch, 1000)
    w = InferenceWorker(s, t, Uniform(), ident="w")
    w.setup()
    for _ in range(len(batch) + 2):
        w.step()
    w.finish()
    labelled, dead = len(t.entries(t.keys.labels)), t._client.xlen(t.keys.dead)
    assert labelled + dead == len(batch)
    assert t._client.xpending(t.keys.crops, WORKERS_GROUP)["pending"] == 0
    assert t._client.xlen(t.keys.crops) == 0 and t.depth(t.keys.crops) == 0


# -- models that disagree with their metadata --------------------------------------------------
def model_copy(tmp_path, **meta_changes):
    """The shipped model's files in tmp_path with some metadata fields replaced."""
    meta = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())
    for name in set(meta["files"].values()):
        shutil.copyfile(DEFAULT_MODEL_DIR / name, tmp_path / name)  # copies: a test may corrupt one
    meta.update(meta_changes)
    (tmp_path / "model.json").write_text(json.dumps(meta))
    return tmp_path / "model.json"


def test_a_model_whose_outputs_disagree_with_its_metadata_is_refused(tmp_path, monkeypatch):
    from fer_pipeline import model as model_mod

    path = model_copy(tmp_path)
    real = model_mod.LiteRTPredictor.predict
    # The shipped file with its last output dropped: a 6-class model under 7-class metadata.
    monkeypatch.setattr(model_mod.LiteRTPredictor, "predict", lambda self, x: real(self, x)[:, :6])
    with pytest.raises(ModelError, match="outputs shape \\(6,\\), metadata says 7 classes"):
        load_predictor(path)
    monkeypatch.setattr(model_mod.LiteRTPredictor, "predict", lambda self, x: np.full((len(x), 7), np.nan))
    with pytest.raises(ModelError, match="does not output probabilities"):
        load_predictor(path)


# -- bad command lines: one readable line, non-zero exit, no traceback ---------------------------
def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fer_pipeline", *args], capture_output=True, text=True, timeout=60,
                          env=env)


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("unreachable redis", ["worker", "--redis-url", "redis://127.0.0.1:1/0"], "cannot reach Redis"),
        ("wrong scheme", ["logger", "--redis-url", "http://127.0.0.1:6379"], "a Redis URL starts with redis://"),
        ("missing video", ["producer", "--source", "/no/such/video.mp4", "--redis-url", "{url}"], "no such file"),
        ("unwritable db", ["logger", "--db", "/proc/forbidden/emotions.sqlite", "--redis-url", "{url}"],
         "cannot open the emotion database"),
        ("unwritable out", ["display", "--window", "off", "--out", "/proc/forbidden", "--redis-url", "{url}"],
         "cannot create the output folder"),
        ("labels mismatch", ["worker", "--model", "{bad_labels}", "--redis-url", "{url}"], "differ from this build"),
        ("input mismatch", ["worker", "--model", "{bad_input}", "--redis-url", "{url}"], "is not [N, 48, 48, 1]"),
        ("corrupt tflite", ["worker", "--model", "{corrupt}", "--redis-url", "{url}"], "cannot load TFLite model"),
        ("bad setting", ["worker", "--max-batch", "0", "--redis-url", "{url}"], "invalid setting max_batch"),
    ],
)
@pytest.mark.redis
def test_bad_role_command_lines_are_one_readable_line(case, args, message, redis_settings, tmp_path):
    values = {"url": redis_settings.redis.url}
    if "{bad_labels}" in args:
        values["bad_labels"] = model_copy(tmp_path, labels=["happy", "angry", "disgust", "fear", "neutral", "sad",
                                                            "surprise"])
    if "{bad_input}" in args:
        values["bad_input"] = model_copy(tmp_path, input={"shape": [None, 64, 64, 3]})
    if "{corrupt}" in args:
        values["corrupt"] = model_copy(tmp_path)
        meta = json.loads(values["corrupt"].read_text())
        for key in ("tflite", "tflite_int8"):  # whichever the worker picks for this CPU
            if key in meta["files"]:
                (tmp_path / meta["files"][key]).write_bytes(b"TFL3 but not really a flatbuffer" * 10)
    r = run_cli(*[a.format(**values) for a in args], "--prefix", redis_settings.redis.prefix)
    assert r.returncode == 1, (case, r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], (case, r.stderr)
    assert "Traceback" not in r.stderr
