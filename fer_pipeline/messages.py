"""Versioned wire messages, msgpack-encoded.

Each message is a frozen pydantic model with a ``kind`` tag and ``v`` (schema version).
Raw pixels travel as bytes (a 48x48 crop is 2,304 bytes; display frames are JPEG), never
pickle. ``decode`` raises only ``MessageError`` with a short reason, which the receiving
role writes to the dead-letter stream.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Annotated, Final, Literal

import msgpack
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from fer_pipeline.errors import MessageError
from fer_pipeline.labels import EMOTIONS, NUM_CLASSES

SCHEMA_VERSION: Final = 1
CROP_SIZE = 48
CROP_BYTES = CROP_SIZE * CROP_SIZE
# Pixel payloads must arrive as msgpack bin: lax validation would turn a str into bytes.
RawBytes = Annotated[bytes, Strict()]
# Every number a message carries is bounded to what its consumers store and draw, so a
# schema-valid message can never crash one (SQLite INTEGER is int64, the label blocks keep
# sizes as int32, OpenCV's video writer wants a sane frame rate): such a message is refused
# (dead-lettered) where it is received instead.
# Times are epoch seconds: real numbers (a NaN would sort nowhere in a timeline), after 1970
# and before 2286.
MAX_TIME = 1e10
Finite = Annotated[float, Field(ge=0.0, lt=MAX_TIME, allow_inf_nan=False)]
# A frame's position in its video (``position_s``: seconds from its start; file and replay
# sources only, None for live cameras) is bounded the same way. ``captured_at`` is when the
# frame was read, which a replay faster or slower than real time (``--fast``) stretches; this
# is where the frame sits in the file. Optional, so that crops and labels of the previous
# build (which lack it) still decode.
# Frame numbers, track ids and counts: 2**53 keeps them exact in a float and in the
# dashboard's JSON, and far inside int64 (a 1000 fps camera would need 285,000 years).
MAX_COUNT = 2**53
Count = Annotated[int, Field(ge=0, lt=MAX_COUNT)]
# Box coordinates and sides in source pixels: 2**20 is beyond any frame we accept.
MAX_SIDE = 2**20
MAX_FACES = 1024  # faces in one frame
MAX_FPS = 1000.0


def _name(max_length: int):
    # Identifiers and names: no NUL, which PostgreSQL's text cannot hold (SQLite's can).
    return Field(min_length=1, max_length=max_length, pattern=r"^[^\x00]+$")


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    v: Literal[1] = SCHEMA_VERSION

    def encode(self) -> bytes:
        return _pack(self.model_dump(mode="python"))


class BBox(BaseModel):
    """Face box in source-frame pixels."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    x: int = Field(ge=0, lt=MAX_SIDE)
    y: int = Field(ge=0, lt=MAX_SIDE)
    w: int = Field(gt=0, le=MAX_SIDE)
    h: int = Field(gt=0, le=MAX_SIDE)


class FaceCrop(_Message):
    """One detected face: a 48x48 gray crop plus where and when it came from."""

    kind: Literal["crop"] = "crop"
    camera_id: str = _name(128)
    # A producer run id: frame numbers restart when a camera restarts, this keeps crop ids unique.
    run_id: str = _name(64)
    frame_index: Count
    face_index: int = Field(ge=0, lt=MAX_FACES)
    faces_in_frame: int = Field(ge=1, le=MAX_FACES)
    track_id: Count
    bbox: BBox
    captured_at: Finite
    position_s: Finite | None = None  # seconds into the video
    published_at: Finite
    crop: RawBytes
    truth: str | None = None  # known label, from labelled replay sources only

    @field_validator("crop")
    @classmethod
    def _crop_shape(cls, v: bytes) -> bytes:
        if len(v) != CROP_BYTES:
            msg = f"crop must be {CROP_SIZE}x{CROP_SIZE} uint8 ({CROP_BYTES} bytes), got {len(v)} bytes"
            raise ValueError(msg)
        return v

    @field_validator("truth")
    @classmethod
    def _truth(cls, v: str | None) -> str | None:
        if v is not None and v not in EMOTIONS:
            msg = f"truth must be one of {EMOTIONS}, got {v!r}"
            raise ValueError(msg)
        return v

    @property
    def crop_id(self) -> str:
        """Identity of this face observation; labels and log rows are keyed by it."""
        return f"{self.camera_id}/{self.run_id}/{self.frame_index}/{self.face_index}"

    def pixels(self) -> np.ndarray:
        """The crop as a (48, 48) uint8 view over the message bytes (no copy)."""
        return np.frombuffer(self.crop, dtype=np.uint8).reshape(CROP_SIZE, CROP_SIZE)

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, **fields) -> FaceCrop:
        """A crop from a (48, 48) uint8 array and the other fields; the pixels are checked first."""
        _check_pixels(pixels)
        return cls(crop=np.ascontiguousarray(pixels).tobytes(), **fields)

    @staticmethod
    def pack(pixels: np.ndarray, *, camera_id: str, run_id: str, frame_index: int, face_index: int,
             faces_in_frame: int, track_id: int, bbox: tuple[int, int, int, int], captured_at: float,
             published_at: float, truth: str | None = None, position_s: float | None = None) -> bytes:
        """The wire bytes of ``from_pixels(...).encode()`` without building the model: the
        producer's per-face hot path (1.4 us against 8.5 us). The pixels are checked here;
        every other field is validated where it is received (``decode``, which dead-letters
        a bad crop), and tests hold the two ways to the same bytes."""
        _check_pixels(pixels)
        x, y, w, h = bbox
        return _pack({
            "v": SCHEMA_VERSION, "kind": "crop", "camera_id": camera_id, "run_id": run_id,
            "frame_index": int(frame_index), "face_index": int(face_index), "faces_in_frame": int(faces_in_frame),
            "track_id": int(track_id), "bbox": {"x": int(x), "y": int(y), "w": int(w), "h": int(h)},
            "captured_at": float(captured_at),
            "position_s": None if position_s is None else float(position_s), "published_at": float(published_at),
            "crop": np.ascontiguousarray(pixels).tobytes(), "truth": truth,
        })


def _check_pixels(pixels: np.ndarray) -> None:
    if pixels.shape != (CROP_SIZE, CROP_SIZE) or pixels.dtype != np.uint8:
        msg = f"crop must be ({CROP_SIZE}, {CROP_SIZE}) uint8, got {pixels.shape} {pixels.dtype}"
        raise ValueError(msg)


_packers = threading.local()  # a Packer per thread (cameras pack in their own threads)


def _pack(fields: dict) -> bytes:
    # Reusing a Packer saves ~0.4 us a message against msgpack.packb, which builds one per call.
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(fields)


class Label(_Message):
    """The worker's answer for one crop."""

    kind: Literal["label"] = "label"
    crop_id: str = _name(512)
    camera_id: str = _name(128)
    run_id: str = _name(64)
    frame_index: Count
    face_index: int = Field(ge=0, lt=MAX_FACES)
    faces_in_frame: int = Field(ge=1, le=MAX_FACES)
    track_id: Count
    bbox: BBox
    emotion: str
    confidence: float = Field(ge=0.0, le=1.0)
    probabilities: tuple[float, ...]
    model_id: str = _name(256)
    worker_id: str = _name(256)
    captured_at: Finite
    position_s: Finite | None = None  # seconds into the video
    published_at: Finite
    inferred_at: Finite
    labelled_at: Finite
    truth: str | None = None

    @field_validator("probabilities")
    @classmethod
    def _probs(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if len(v) != NUM_CLASSES:
            msg = f"probabilities must have {NUM_CLASSES} values, got {len(v)}"
            raise ValueError(msg)
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in v):
            msg = "probabilities must be finite and within [0, 1]"
            raise ValueError(msg)
        if abs(sum(v) - 1.0) > 1e-3:
            msg = f"probabilities must sum to 1, got {sum(v):.4f}"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _emotion_matches(self) -> Label:
        if self.emotion not in EMOTIONS:
            msg = f"emotion must be one of {EMOTIONS}, got {self.emotion!r}"
            raise ValueError(msg)
        return self

    @classmethod
    def for_crop(cls, crop: FaceCrop, probabilities: np.ndarray, *, model_id: str, worker_id: str,
                 inferred_at: float) -> Label:
        """The label of ``crop``: its identity fields, the most probable emotion with its probability
        as confidence, and ``labelled_at`` set to now."""
        probs = tuple(float(p) for p in probabilities)
        best = int(np.argmax(probabilities))
        return cls(
            crop_id=crop.crop_id, camera_id=crop.camera_id, run_id=crop.run_id,
            frame_index=crop.frame_index, face_index=crop.face_index, faces_in_frame=crop.faces_in_frame,
            track_id=crop.track_id, bbox=crop.bbox, emotion=EMOTIONS[best], confidence=probs[best],
            probabilities=probs, model_id=model_id, worker_id=worker_id, captured_at=crop.captured_at,
            position_s=crop.position_s, published_at=crop.published_at, inferred_at=inferred_at, labelled_at=time.time(),
            truth=crop.truth,
        )

    @staticmethod
    def pack_batch(crops: Sequence[FaceCrop], probabilities: np.ndarray, *, model_id: str, worker_id: str,
                   inferred_at: float) -> list[bytes]:
        """The wire bytes of ``for_crop(...).encode()`` for a batch, without building models:
        the worker's per-face hot path (about 3 us a label against 14). Every row must pass
        ``valid_probabilities`` (checked here for the whole batch at once, the rules of
        ``_probs``); the worker dead-letters the crops whose rows do not before calling this."""
        probabilities = np.asarray(probabilities)
        if len(probabilities) != len(crops) or not valid_probabilities(probabilities).all():
            msg = "every row of probabilities must pass valid_probabilities, one row per crop"
            raise ValueError(msg)
        rows = probabilities.astype(np.float64).tolist()
        best = probabilities.argmax(axis=1).tolist()
        labelled_at = time.time()
        out = []
        for crop, p, b in zip(crops, rows, best):
            box = crop.bbox
            out.append(_pack({
                "v": SCHEMA_VERSION, "kind": "label", "crop_id": crop.crop_id, "camera_id": crop.camera_id,
                "run_id": crop.run_id, "frame_index": crop.frame_index, "face_index": crop.face_index,
                "faces_in_frame": crop.faces_in_frame, "track_id": crop.track_id,
                "bbox": {"x": box.x, "y": box.y, "w": box.w, "h": box.h}, "emotion": EMOTIONS[b],
                "confidence": p[b], "probabilities": p, "model_id": model_id, "worker_id": worker_id,
                "captured_at": crop.captured_at, "position_s": crop.position_s, "published_at": crop.published_at,
                "inferred_at": inferred_at,
                "labelled_at": labelled_at, "truth": crop.truth,
            }))
        return out


def valid_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Per row of a (n, 7) array: would ``Label`` accept it (finite, within [0, 1], summing
    to 1 within 1e-3)? The validator's rules, for a whole batch in a few numpy calls."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES:
        return np.zeros(len(p), dtype=bool)
    with np.errstate(invalid="ignore"):
        inside = (np.isfinite(p) & (p >= 0.0) & (p <= 1.0)).all(axis=1)
        return inside & (np.abs(p.sum(axis=1) - 1.0) <= 1e-3)


class Frame(_Message):
    """A (downscaled) JPEG of one captured frame, for display consumers."""

    kind: Literal["frame"] = "frame"
    camera_id: str = _name(128)
    run_id: str = _name(64)
    frame_index: Count
    captured_at: Finite
    faces: int = Field(ge=0, le=MAX_FACES)
    # Factor from source pixels to this JPEG's pixels (boxes are in source pixels).
    scale: float = Field(gt=0.0, le=1.0)
    fps: float = Field(ge=0.0, le=MAX_FPS, allow_inf_nan=False)  # 0: unknown
    jpeg: RawBytes


class EndOfStream(_Message):
    """A camera's finite source ended; written to its frames stream so the display can close its video."""

    kind: Literal["end"] = "end"
    camera_id: str = _name(128)
    run_id: str = _name(64)
    frames: Count
    crops: Count
    ended_at: Finite


AnyMessage = Annotated[FaceCrop | Label | Frame | EndOfStream, Field(discriminator="kind")]
_ADAPTER: TypeAdapter = TypeAdapter(AnyMessage)


def decode(payload: bytes, *, max_bytes: int | None = None, expect: type[_Message] | None = None):
    """Decode and validate one message; raise ``MessageError(reason)`` on anything wrong."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise MessageError(f"payload must be bytes, got {type(payload).__name__}")
    if max_bytes is not None and len(payload) > max_bytes:
        raise MessageError(f"payload of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=max_bytes or 0 or 2**31 - 1)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise MessageError(f"malformed msgpack: {type(e).__name__}") from e
    if not isinstance(raw, dict):
        raise MessageError(f"message must be a map, got {type(raw).__name__}")
    version = raw.get("v")
    if version != SCHEMA_VERSION:
        raise MessageError(f"unknown schema version {version!r} (this build reads {SCHEMA_VERSION})")
    try:
        msg = _ADAPTER.validate_python(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        raise MessageError(f"invalid {raw.get('kind', 'message')}: {where}: {first.get('msg')}") from e
    if expect is not None and not isinstance(msg, expect):
        raise MessageError(f"expected a {expect.__name__} message, got kind {raw.get('kind')!r}")
    return msg
