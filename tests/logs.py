"""Emotion logs for tests: labels of tracks and of a messy day, delivering them the logger's
way, comparing rows with label blocks and reports with reports. Shared by the emotion-log,
analytics, logger and benchmark tests (one copy, not one per test module)."""

from __future__ import annotations

import sqlite3

import msgpack
import numpy as np

from fer_pipeline.consumers.label_logger import LabelLoggerService
from fer_pipeline.emotion_log import blocks
from fer_pipeline.emotion_log.reader import SqliteLog
from fer_pipeline.emotion_log.schema import PROB_COLUMNS
from fer_pipeline.emotion_log.sqlite import SqliteStore
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import BBox, Label
from fer_pipeline.streams import LOGGER_GROUP
from tests.factories import make_label

K = len(EMOTIONS)
T0 = 1_700_000_000.0
TRACK_FPS = 30.0  # track_labels: one label per frame at this rate
FPS = 10.0  # day(): the cameras' label rate
N = 40  # publish_labels' default count


def track_labels(emotions: list[str], *, camera_id="cam0", run_id="r1", track_id=1, start=T0, confidence=0.8,
                 small: set[int] = frozenset(), first_frame=0):
    out = []
    for i, e in enumerate(emotions):
        size = 20 if i in small else 80
        # One face slot per track keeps crop ids (camera, run, frame, face) distinct across tracks.
        out.append(make_label(camera_id=camera_id, run_id=run_id, track_id=track_id, frame_index=first_frame + i,
                              face_index=track_id,
                              emotion=e, confidence=confidence, captured_at=start + i / TRACK_FPS,
                              bbox=BBox(x=0, y=0, w=size, h=size)))
    return out


def same_report(a, b) -> bool:
    return (a.labels_read == b.labels_read and a.tracks == b.tracks and a.cameras == b.cameras
            and a.episodes == b.episodes and a.transitions == b.transitions and list(a.timelines) == list(b.timelines)
            and all((a.timelines[k] == b.timelines[k]).all() for k in a.timelines))


def label(camera: str, run: str, track: int, frame: int, t: float, probs, size: int = 80) -> Label:
    p = tuple(float(x) for x in probs)
    return Label.model_construct(
        crop_id=f"{camera}/{run}/{frame}/{track}", camera_id=camera, run_id=run, track_id=track, frame_index=frame,
        face_index=track, faces_in_frame=1, bbox=BBox(x=0, y=0, w=size, h=size + 3), emotion=EMOTIONS[int(np.argmax(p))],
        confidence=max(p), probabilities=p, model_id="m", worker_id="w", captured_at=t, published_at=t,
        inferred_at=t, labelled_at=t + 0.05, truth=None)


def day(seed: int = 0, cameras=("door", "hall")) -> list[Label]:
    """Labels in capture order: per camera, two producer runs that reuse track ids (the second
    starting while the first still runs, so one track id interleaves two runs), tracks of 1
    to 400 labels with gaps, sustained emotions with flickers, some small faces, and tracks
    that end long before the log does (they get sealed)."""
    rng = np.random.default_rng(seed)
    out = []
    for camera in cameras:
        for run, t0 in (("r1", T0), ("r2", T0 + 45.0)):
            start = t0
            for track in range(6):
                n = int(rng.choice([1, 3, 40, 150, 400]))
                steps = rng.choice([1 / FPS, 1 / FPS, 2 / FPS, 3.0], n)
                t = start + np.cumsum(steps)
                seg = np.cumsum(rng.random(n) < 0.03)
                logits = rng.normal(0.0, 0.7, (n, K))
                logits[np.arange(n), (seg + track) % K] += 2.2
                flick = rng.random(n) < 0.05
                logits[flick, rng.integers(0, K, flick.sum())] += 3.0
                p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                size = np.where(rng.random(n) < 0.08, 25, 80)
                out += [label(camera, run, track, int(1000 * track + i), float(t[i]), p[i], int(size[i]))
                        for i in range(n)]
                start = float(t[-1]) + rng.choice([0.5, 20.0])
    return sorted(out, key=lambda x: x.captured_at)


def deliver(store, labels: list[Label], seed: int = 0, *, max_batch: int = 24) -> int:
    """The logger's way, with trouble: batches of 1..max_batch, labels arriving out of order
    across batches, redelivered batches and crop ids repeated within a batch."""
    rng = np.random.default_rng(seed)
    labels = list(labels)
    for i in range(0, len(labels) - 8, 17):  # out of order: swap labels a few batches apart
        j = i + int(rng.integers(1, 8))
        labels[i], labels[j] = labels[j], labels[i]
    stored, at, batches = 0, 0, []
    while at < len(labels):
        b = int(rng.integers(1, max_batch + 1))
        batch = labels[at:at + b]
        if rng.random() < 0.1:
            batch = batch + batch[: max(1, len(batch) // 3)]  # the same crop twice in one batch
        if batches and rng.random() < 0.1:
            batch = batches[int(rng.integers(0, len(batches)))] + batch  # a redelivery
        stored += store.add(batch)
        batches.append(batch)
        at += b
    return stored


def sqlite_rows_and_blocks(path) -> tuple[list, list]:
    """(rows, block labels) as comparable tuples: (camera, run, track, t, min(w, h), float32 probs)."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(f"SELECT camera_id, run_id, track_id, captured_at, min(w, h), {', '.join(PROB_COLUMNS)} "
                          "FROM labels").fetchall()
        stored = db.execute("SELECT camera_id, run_id, track_id, first_at, last_at, n, sealed, t, size, probs "
                            "FROM label_blocks").fetchall()
    finally:
        db.close()
    return rows, stored


def block_tuples(stored) -> list[tuple]:
    out = []
    for camera, run, track, first_at, last_at, n, _sealed, t, size, probs in stored:
        lab = blocks.unpack(n, bytes(t), bytes(size), bytes(probs))
        assert len(lab.t) == n > 0 and lab.t[0] == first_at and lab.t[-1] == last_at
        assert (np.diff(lab.t) >= 0).all(), "a block is in capture order"
        out += [(camera, run, int(track), float(lab.t[i]), int(lab.size[i]), tuple(lab.probs[:, i].tolist()))
                for i in range(n)]
    return out


def row_tuples(rows) -> list[tuple]:
    return [(r[0], r[1], int(r[2]), float(r[3]), int(r[4]),
             tuple(np.asarray(r[5:], dtype=np.float32).tolist())) for r in rows]


def assert_invariant(path) -> None:
    """Every row in exactly one block, and the log marked as covered."""
    rows, stored = sqlite_rows_and_blocks(path)
    assert sorted(row_tuples(rows)) == sorted(block_tuples(stored))
    with SqliteLog(path) as log:
        assert log.blocks


def publish_labels(transport, n: int = N, *, bad: bool = True, start: int = 0, per_entry: int = 8) -> list[bytes]:
    """``n`` labels (and a bad one in the middle) in bundles of ``per_entry``, as worker batches."""
    payloads = [make_label(frame_index=start + i, track_id=(start + i) % 3).encode() for i in range(n)]
    if bad:
        payloads.insert(n // 2, msgpack.packb({"v": 1, "kind": "label", "crop_id": "x"}))
    for i in range(0, len(payloads), per_entry):
        transport.publish(transport.keys.labels, payloads[i:i + per_entry], transport.settings.streams.labels_maxlen)
    return payloads


def drive(service: LabelLoggerService, max_steps: int = 50) -> None:
    """Step until the logger group has nothing undelivered or pending (fakeredis: no blocking)."""
    service.setup()
    for _ in range(max_steps):
        service.step()
        if service.transport.backlog(service.stream, LOGGER_GROUP) == (0, 0):
            return
    raise AssertionError(f"not drained after {max_steps} steps: {service.counters}")


def open_at_once(open_close, n: int = 4) -> list[BaseException]:
    """Run ``open_close`` in ``n`` threads released together (several loggers opening one log);
    returns what they raised."""
    import threading

    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def one() -> None:
        try:
            start.wait()
            open_close()
        except BaseException as e:  # noqa: BLE001 - returned to the test, which asserts on it
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def random_log(path, seed: int = 0) -> None:
    """Three cameras; two producer runs that reuse track ids, the second starting while the
    first still runs (their labels interleave inside a track id); tracks of 1 to 150 labels,
    gaps longer than max_gap, small faces, noisy probabilities."""
    from fer_pipeline.emotion_log.schema import PROB_COLUMNS

    rng = np.random.default_rng(seed)
    SqliteStore(path).close()
    rows = []
    for camera in ("c1", "c0", "c2"):
        for run, t0 in (("run-b", T0), ("run-a", T0 + 1.0)):
            for track in range(9):
                n = int(rng.choice([1, 2, 5, 40, 150]))
                t = t0 + track * 3.0 + np.r_[0.0, np.cumsum(rng.choice([1 / 30, 1 / 30, 1 / 15, 2.5], n - 1))]
                logits = rng.normal(0.0, 0.8, (n, len(PROB_COLUMNS)))
                logits[np.arange(n), rng.integers(0, 2, n) + track % 4] += 2.0
                p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                size = np.where(rng.random(n) < 0.1, 20, 80)
                for i in range(n):
                    rows.append((f"{camera}-{run}-{track}-{i}", camera, run, track, i, 0, float(t[i]), float(t[i]),
                                 1.0, "happy", float(p[i].max()), *map(float, p[i]), "m", "w", None, 0, 0,
                                 int(size[i]), int(size[i])))
    cols = ("crop_id, camera_id, run_id, track_id, frame_index, face_index, captured_at, labelled_at, latency_ms, "
            f"emotion, confidence, {', '.join(PROB_COLUMNS)}, model_id, worker_id, truth, x, y, w, h")
    with sqlite3.connect(path) as db:
        db.executemany(f"INSERT INTO labels ({cols}) VALUES ({', '.join('?' * len(cols.split(',')))})", rows)


OLD, NEW = "20261203-100000-aaaa", "20261203-120000-bbbb"


def two_demo_runs() -> list:
    """The demo run twice: the same two tracks in each run (ids reused); the second run's
    producer on cam0 crashed and `up` restarted it as <run>~1 (its track ids start again)."""
    labels = []
    for run, start in ((OLD, T0), (NEW, T0 + 3600)):
        labels += track_labels(["happy"] * 60, camera_id="cam0", run_id=run, track_id=1, start=start)
        labels += track_labels(["sad"] * 45, camera_id="cam1", run_id=run, track_id=1, start=start + 1)
    labels += track_labels(["angry"] * 30, camera_id="cam0", run_id=f"{NEW}~1", track_id=1, start=T0 + 3700,
                           first_frame=1000)
    return labels
