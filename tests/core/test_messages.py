from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from fer_pipeline.errors import MessageError
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import BBox, FaceCrop, Frame, Label, decode, valid_probabilities
from tests.conftest import make_crop_pixels


def make_crop(**over) -> FaceCrop:
    fields = dict(camera_id="cam0", run_id="r1", frame_index=3, face_index=0, faces_in_frame=1, track_id=7,
                  bbox=BBox(x=1, y=2, w=30, h=30), captured_at=1.0, published_at=1.5)
    fields.update(over)
    return FaceCrop.from_pixels(make_crop_pixels(), **fields)


def test_crop_round_trip_keeps_pixels_exactly():
    crop = make_crop()
    back = decode(crop.encode(), expect=FaceCrop)
    assert back == crop
    assert np.array_equal(back.pixels(), make_crop_pixels())
    assert back.crop_id == "cam0/r1/3/0"


def test_label_round_trip_and_argmax():
    probs = np.array([0.05, 0.05, 0.1, 0.6, 0.1, 0.05, 0.05])
    label = Label.for_crop(make_crop(), probs, model_id="m", worker_id="w", inferred_at=2.0)
    assert label.emotion == "happy" and label.confidence == pytest.approx(0.6)
    assert decode(label.encode(), expect=Label) == label


def test_frame_round_trip():
    f = Frame(camera_id="c", run_id="r", frame_index=0, captured_at=0.0, faces=0, scale=0.5, fps=30.0, jpeg=b"\xff\xd8")
    assert decode(f.encode()) == f


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1\xc1", "malformed msgpack"),                               # reserved msgpack byte
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb({"v": 99, "kind": "crop"}), "unknown schema version 99"),
        (msgpack.packb({"v": 1, "kind": "crop"}), "invalid crop"),        # missing fields
        (msgpack.packb({"v": 1, "kind": "nope"}), "invalid nope"),
    ],
)
def test_decode_rejects_bad_payloads_with_a_reason(payload, reason):
    with pytest.raises(MessageError) as e:
        decode(payload)
    assert reason in e.value.reason


def test_wrong_crop_size_is_rejected():
    raw = msgpack.unpackb(make_crop().encode())
    raw["crop"] = b"\x00" * 100
    with pytest.raises(MessageError, match="48x48"):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_oversized_payload_is_rejected_before_parsing():
    with pytest.raises(MessageError, match="exceeds"):
        decode(make_crop().encode(), max_bytes=100)


def test_expect_checks_kind():
    with pytest.raises(MessageError, match="expected a Label"):
        decode(make_crop().encode(), expect=Label)


@pytest.mark.parametrize("bad", [[math.nan] + [0.0] * 6, [0.5] * 7, [1.0] * 3])
def test_label_rejects_broken_probabilities(bad):
    with pytest.raises(ValueError):
        Label.for_crop(make_crop(), np.array(bad + [0.0] * (7 - len(bad)) if len(bad) < 7 else bad),
                       model_id="m", worker_id="w", inferred_at=0.0)


@pytest.mark.parametrize("position_s", [None, 0.0, 7.007, np.float64(12.5)])
def test_fast_crop_packing_gives_the_models_bytes(position_s):
    """The producer's hot path (no model built) and the validated model encode identically."""
    crop = make_crop(truth="fear", face_index=2, faces_in_frame=3, position_s=position_s)
    packed = FaceCrop.pack(make_crop_pixels(), camera_id="cam0", run_id="r1", frame_index=3, face_index=2,
                           faces_in_frame=3, track_id=7, bbox=(1, 2, 30, 30), captured_at=1.0, published_at=1.5,
                           truth="fear", position_s=position_s)
    assert packed == crop.encode()
    assert decode(packed, expect=FaceCrop) == crop
    assert decode(packed, expect=FaceCrop).position_s == position_s
    with pytest.raises(ValueError, match="48, 48"):
        FaceCrop.pack(np.zeros((40, 48), np.uint8), camera_id="c", run_id="r", frame_index=0, face_index=0,
                      faces_in_frame=1, track_id=0, bbox=(0, 0, 1, 1), captured_at=0.0, published_at=0.0)


def test_fast_label_packing_matches_for_crop():
    crops = [make_crop(frame_index=i, truth="sad" if i else None, position_s=i / 30 if i != 1 else None)
             for i in range(3)]
    probs = np.random.default_rng(0).dirichlet(np.ones(7), 3).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    packed = Label.pack_batch(crops, probs, model_id="m", worker_id="w", inferred_at=2.0)
    for crop, p, payload in zip(crops, probs, packed):
        label = decode(payload, expect=Label)
        slow = Label.for_crop(crop, p, model_id="m", worker_id="w", inferred_at=2.0)
        assert label == slow.model_copy(update={"labelled_at": label.labelled_at})
        assert payload == slow.model_copy(update={"labelled_at": label.labelled_at}).encode()  # the same bytes
        assert label.position_s == crop.position_s
    assert [decode(b, expect=Label).position_s for b in packed] == [0.0, None, 2 / 30]
    with pytest.raises(ValueError, match="valid_probabilities"):
        Label.pack_batch(crops, np.full((3, 7), 0.5), model_id="m", worker_id="w", inferred_at=2.0)


@pytest.mark.parametrize("row", [[math.nan] + [0.0] * 6, [0.5] * 7, [1.0] + [0.0] * 6, [1.0005] + [0.0] * 6,
                                 [-1e-9, 1.0] + [0.0] * 5, [math.inf] + [0.0] * 6, [0.3, 0.7] + [0.0] * 5])
def test_valid_probabilities_agrees_with_the_label_validator(row):
    try:
        Label.for_crop(make_crop(), np.array(row), model_id="m", worker_id="w", inferred_at=0.0)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(valid_probabilities(np.array([row]))[0]) == accepted


def test_emotions_are_alphabetical():
    assert list(EMOTIONS) == sorted(EMOTIONS)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_times_are_refused_where_received(value):
    """A NaN capture time would sort nowhere in a timeline (and break the log's blocks)."""
    packed = FaceCrop.pack(make_crop_pixels(), camera_id="c", run_id="r", frame_index=0, face_index=0,
                           faces_in_frame=1, track_id=0, bbox=(0, 0, 1, 1), captured_at=value, published_at=0.0)
    with pytest.raises(MessageError, match="captured_at"):
        decode(packed)
    label = Label.for_crop(make_crop(), np.full(7, 1 / 7), model_id="m", worker_id="w", inferred_at=0.0)
    raw = msgpack.unpackb(label.encode())
    raw["labelled_at"] = value
    with pytest.raises(MessageError, match="labelled_at"):
        decode(msgpack.packb(raw))


def test_messages_of_the_previous_build_still_decode():
    """Crops and labels without ``position_s`` (the build before it) decode, with None."""
    crop = decode(msgpack.packb(_crop_fields(), use_bin_type=True), expect=FaceCrop)
    assert crop.position_s is None
    raw = Label.for_crop(crop, np.full(7, 1 / 7), model_id="m", worker_id="w", inferred_at=2.0).model_dump()
    del raw["position_s"]
    label = decode(msgpack.packb(raw, use_bin_type=True), expect=Label)
    assert label.position_s is None and label.captured_at == 1.0


@pytest.mark.parametrize("value", [-0.001, math.nan, math.inf, 1e10])
def test_positions_outside_a_video_are_refused_where_received(value):
    with pytest.raises(MessageError, match="invalid crop: crop.position_s: "):
        decode(msgpack.packb(_crop_fields(position_s=value), use_bin_type=True))
    label = Label.for_crop(make_crop(), np.full(7, 1 / 7), model_id="m", worker_id="w", inferred_at=0.0)
    with pytest.raises(MessageError, match="invalid label: label.position_s: "):
        decode(msgpack.packb({**label.model_dump(), "position_s": value}, use_bin_type=True))
    assert decode(msgpack.packb(_crop_fields(position_s=1e10 - 1), use_bin_type=True)).position_s == 1e10 - 1


def _crop_fields(**update) -> dict:
    fields = {"v": 1, "kind": "crop", "camera_id": "c", "run_id": "r", "frame_index": 0, "face_index": 0,
              "faces_in_frame": 1, "track_id": 0, "bbox": {"x": 0, "y": 0, "w": 10, "h": 10},
              "captured_at": 1.0, "published_at": 1.0, "crop": bytes(48 * 48)}
    for key, value in update.items():
        if key in ("x", "y", "w", "h"):
            fields["bbox"] = {**fields["bbox"], key: value}
        else:
            fields[key] = value
    return fields


@pytest.mark.parametrize(("field", "value", "where"), [
    # The values an adversarial run used to crash the logger (SQLite int64, the blocks' int32).
    ("frame_index", 2**63, "frame_index"), ("track_id", 2**64 - 1, "track_id"), ("x", 2**63, "bbox.x"),
    ("w", 2**31, "bbox.w"), ("h", 2**31, "bbox.h"), ("captured_at", 1e308, "captured_at"),
    ("published_at", -1.0, "published_at"), ("face_index", 5000, "face_index"),
])
def test_numbers_beyond_what_consumers_store_are_refused(field, value, where):
    with pytest.raises(MessageError, match=f"invalid crop: crop.{where}: "):
        decode(msgpack.packb(_crop_fields(**{field: value}), use_bin_type=True))
    # The bounds themselves are accepted: the limits are what the consumers handle.
    from fer_pipeline.messages import MAX_COUNT, MAX_SIDE

    edge = {"frame_index": MAX_COUNT - 1, "track_id": MAX_COUNT - 1, "x": MAX_SIDE - 1, "w": MAX_SIDE,
            "h": MAX_SIDE, "face_index": 1023}
    if field in edge:
        decode(msgpack.packb(_crop_fields(**{field: edge[field]}), use_bin_type=True))


def test_frame_rates_no_camera_has_are_refused():
    ok = Frame(camera_id="c", run_id="r", frame_index=0, captured_at=1.0, faces=0, scale=1.0, fps=1000.0, jpeg=b"x")
    for fps in (1e308, 90_000.0, -1.0):
        with pytest.raises(MessageError, match="fps"):
            decode(msgpack.packb({**ok.model_dump(), "fps": fps}, use_bin_type=True))
