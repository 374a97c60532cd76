"""The sinks' wire format: one JSON object per label and per episode event (README, "Sinks").

Both sinks send the same objects, so a receiver written for MQTT reads the webhook's and
the other way round. Field names are the emotion log's (``crop_id``, ``camera_id``, ...);
times are epoch seconds; ``id`` is what a receiver dedupes on (delivery is at least once).
"""

from __future__ import annotations

import json
import re

from fer_pipeline.consumers.sinks.episodes import EpisodeEvent
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import Label

VERSION = 1  # of this format: a receiver can tell a future change

# MQTT topic levels: "/" splits levels, "+" and "#" are wildcards, NUL is refused.
_TOPIC_UNSAFE = re.compile(r"[/+#\x00]")


def label_json(label: Label) -> dict:
    """One label as the sinks send it."""
    return {
        "v": VERSION, "type": "label", "id": label.crop_id, "crop_id": label.crop_id,
        "camera_id": label.camera_id, "run_id": label.run_id, "track_id": label.track_id,
        "frame_index": label.frame_index, "captured_at": label.captured_at,
        "position_s": label.position_s, "emotion": label.emotion,
        "confidence": round(label.confidence, 4),
        "probabilities": {name: round(p, 4) for name, p in zip(EMOTIONS, label.probabilities)},
        "bbox": {"x": label.bbox.x, "y": label.bbox.y, "w": label.bbox.w, "h": label.bbox.h},
    }


def episode_json(event: EpisodeEvent) -> dict:
    """One episode ``start`` or ``end`` as the sinks send it."""
    return {
        "v": VERSION, "type": event.type, "id": event.id, "episode_id": event.episode_id,
        "camera_id": event.camera_id, "run_id": event.run_id, "track_id": event.track_id, "emotion": event.emotion,
        "started_at": round(event.started_at, 3),
        "ended_at": None if event.ended_at is None else round(event.ended_at, 3),
        "duration_s": event.duration_s, "labels": event.labels, "peak_confidence": event.peak_confidence,
        "mean_confidence": event.mean_confidence, "reason": event.reason,
    }


def dumps(obj: dict) -> bytes:
    """Compact UTF-8 JSON (what goes on the wire)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def topic_level(name: str) -> str:
    """A camera id usable as one MQTT topic level: ``/ + #`` and NUL become ``_``."""
    return _TOPIC_UNSAFE.sub("_", name)
