"""Realistic label sequences for the sink tests: people holding emotions for seconds, with
per-label noise, flickers, small faces and tracks that come and go (what a worker sends)."""

from __future__ import annotations

import numpy as np

from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import BBox, Label
from tests.factories import make_label


def noisy_label(rng: np.random.Generator, emotion: str, **fields) -> Label:
    """A label whose probabilities lean to ``emotion`` with noise (sometimes another argmax)."""
    p = rng.dirichlet(np.full(len(EMOTIONS), 0.6))
    p = 0.45 * p + 0.55 * np.eye(len(EMOTIONS))[EMOTIONS.index(emotion)] * rng.uniform(0.4, 1.0)
    p = p / p.sum()
    label = make_label(emotion=emotion, **fields)
    best = int(np.argmax(p))
    return label.model_copy(update={"probabilities": tuple(float(x) for x in p), "emotion": EMOTIONS[best],
                                    "confidence": float(p[best])})


def person(rng: np.random.Generator, *, camera_id: str = "cam0", run_id: str = "r1", track_id: int = 0,
           t0: float = 1_000.0, seconds: float = 20.0, fps: float = 10.0, first_frame: int = 0) -> list[Label]:
    """One track: an emotion held for 0.3-5 s at a time, labels at ``fps`` with a dropped
    label now and then and a small face (under the report's 40 px) one time in 30."""
    out: list[Label] = []
    t, frame = t0, first_frame
    emotion = str(rng.choice(EMOTIONS))
    change = t0 + rng.uniform(0.3, 5.0)
    while t < t0 + seconds:
        if t >= change:
            emotion, change = str(rng.choice(EMOTIONS)), t + rng.uniform(0.3, 5.0)
        if rng.random() > 0.05:
            side = 30 if rng.random() < 1 / 30 else 80
            out.append(noisy_label(rng, emotion, camera_id=camera_id, run_id=run_id, track_id=track_id,
                                   frame_index=frame, captured_at=round(t, 4), bbox=BBox(x=10, y=10, w=side, h=side)))
        t += 1.0 / fps * rng.uniform(0.8, 1.2)
        frame += 1
    return out


def publish(transport, labels: list[Label]) -> None:
    """Put ``labels`` on the labels stream as one bundle, as a worker publishes a batch."""
    transport.publish(transport.keys.labels, [lab.encode() for lab in labels], 100_000)


def drain(sink, rounds: int = 40) -> None:
    """Steps until everything read was delivered and acked (or ``rounds`` run out)."""
    for _ in range(rounds):
        sink.step()
        if not sink.outbox and not sink.to_ack and sink.transport.backlog(sink.stream, sink.group) == (0, 0):
            return
