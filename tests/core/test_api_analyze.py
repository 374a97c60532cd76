"""fer_pipeline.analyze / Analyzer: in-process results equal the pipeline's own per-frame path."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

import fer_pipeline
from fer_pipeline.analyzer import Analyzer, FaceResult
from fer_pipeline.errors import ConfigError, SourceError
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import FaceCrop, Label, decode
from fer_pipeline.model import load_predictor
from fer_pipeline.producers.faces import FaceFinder
from fer_pipeline.settings import Settings
from tests.factories import demo_frames

# Frames of the demo clip with one face (0, 100), two (40) and four (250).
FRAMES = (0, 40, 100, 250)


@pytest.fixture(scope="module")
def frames() -> dict[int, np.ndarray]:
    return demo_frames(FRAMES)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(settings=Settings(_env_file=None))


def pipeline_labels(frame: np.ndarray, settings: Settings) -> list[Label]:
    """What the producer and a worker compute for ``frame`` as a camera's first frame: the
    producer's FaceFinder, its crop messages, the worker's decode and model call, the labels'
    wire bytes decoded as a consumer does."""
    faces = FaceFinder(settings.producer).find(frame)
    payloads = [FaceCrop.pack(f.crop, camera_id="cam", run_id="r", frame_index=0, face_index=i,
                              faces_in_frame=len(faces), track_id=f.track_id, bbox=f.box, captured_at=1000.0,
                              published_at=1000.0) for i, f in enumerate(faces)]
    crops = [decode(p, expect=FaceCrop) for p in payloads]
    w = settings.worker
    predictor = load_predictor(w.model, w.runtime, threads=w.threads, int8=w.int8)
    probs = predictor.predict(np.stack([c.pixels() for c in crops]))
    return [decode(b, expect=Label) for b in Label.pack_batch(crops, probs, model_id=predictor.model_id,
                                                               worker_id="w", inferred_at=1000.0)]


@pytest.mark.parametrize("index", FRAMES)
def test_results_equal_the_producer_and_worker_path_on_demo_frames(frames, analyzer, index):
    results = analyzer.analyze(frames[index])
    labels = pipeline_labels(frames[index], analyzer.settings)
    assert results, f"no face found on frame {index} of the demo clip"
    assert len(results) == len(labels)
    for r, lab in zip(results, labels):
        assert r.box == (lab.bbox.x, lab.bbox.y, lab.bbox.w, lab.bbox.h)
        assert r.emotion == lab.emotion
        assert list(r.probabilities) == list(EMOTIONS)
        np.testing.assert_allclose(list(r.probabilities.values()), lab.probabilities, atol=1e-6)
        assert r.confidence == pytest.approx(lab.confidence, abs=1e-6)
        assert np.array_equal(r.crop, decode(FaceCrop.pack(r.crop, camera_id="c", run_id="r", frame_index=0,
                                                           face_index=0, faces_in_frame=1, track_id=0, bbox=r.box,
                                                           captured_at=1.0, published_at=1.0)).pixels())
        assert r.score is not None and analyzer.settings.producer.track_score <= r.score <= 1.0


def test_the_four_faces_of_frame_250_are_found(frames, analyzer):
    results = analyzer.analyze(frames[250])
    assert len(results) == 4
    assert all(isinstance(r, FaceResult) and r.emotion in EMOTIONS for r in results)
    assert all(abs(sum(r.probabilities.values()) - 1.0) < 1e-3 for r in results)


def test_gray_bgra_and_path_inputs_give_the_same_faces(frames, analyzer, tmp_path):
    frame = frames[100]
    bgr = analyzer.analyze(frame)
    path = tmp_path / "frame.png"
    assert cv2.imwrite(str(path), frame)
    assert analyzer.analyze(path) == bgr  # PNG is lossless: the same pixels
    assert analyzer.analyze(str(path)) == bgr
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    assert analyzer.analyze(bgra) == bgr
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    found = analyzer.analyze(gray)
    assert len(found) == 1 and analyzer.analyze(gray[:, :, None]) == found
    # The detector sees gray instead of colour: the same face, about the same box.
    (x, y, w, h), (gx, gy, gw, gh) = bgr[0].box, found[0].box
    assert abs(w - gw) < w / 4 and abs(h - gh) < h / 4
    assert abs(x - gx) < w / 4 and abs(y - gy) < h / 4


def test_an_image_without_faces_gives_none(analyzer):
    assert analyzer.analyze(np.full((240, 320, 3), 127, np.uint8)) == []


def test_bad_inputs_are_refused_in_one_line(analyzer, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        analyzer.analyze(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        analyzer.analyze(np.zeros((64, 64, 2), np.uint8))
    with pytest.raises(ValueError, match="numpy image or a path"):
        analyzer.analyze([[0, 1], [2, 3]])  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="cannot read"):
        analyzer.analyze(tmp_path / "missing.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(SourceError, match="cannot decode"):
        analyzer.analyze(junk)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, frames):
    small = Analyzer(settings=Settings(_env_file=None).with_updates(producer={"max_image_pixels": 1000}))
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), frames[0])
    with pytest.raises(SourceError, match="max_image_pixels=1000"):
        small.analyze(path)


def test_unknown_detector_is_a_config_error():
    with pytest.raises(ConfigError, match="invalid setting producer.detector"):
        Analyzer(detector="nope", settings=Settings(_env_file=None))


def test_other_detectors_run_through_the_same_path(frames):
    haar = Analyzer(detector="haar", settings=Settings(_env_file=None))
    assert haar.detector == "haar"
    results = haar.analyze(frames[100])
    assert results and all(r.score == 1.0 for r in results)  # Haar has no score of its own


def test_module_level_analyze_caches_its_analyzer(frames):
    from fer_pipeline.analyzer import _default

    first = fer_pipeline.analyze(frames[0])
    hits = _default.cache_info().hits
    assert fer_pipeline.analyze(frames[0]) == first
    assert _default.cache_info().hits == hits + 1
    assert first and first[0].emotion in EMOTIONS


def test_importing_the_package_loads_neither_opencv_nor_litert_nor_redis():
    code = ("import sys, fer_pipeline; heavy = [m for m in ('cv2', 'ai_edge_litert', 'redis', 'numpy') "
            "if m in sys.modules]; assert not heavy, heavy; fer_pipeline.Pipeline; fer_pipeline.LabelReader; "
            "assert 'cv2' not in sys.modules; print(sorted(fer_pipeline.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "'analyze'" in r.stdout and "'Pipeline'" in r.stdout


def test_module_level_analyze_keeps_the_configured_detector(frames, monkeypatch):
    from fer_pipeline.analyzer import _default

    monkeypatch.setenv("FER_PRODUCER__DETECTOR", "haar")
    _default.cache_clear()
    try:
        results = fer_pipeline.analyze(frames[100])
        assert _default(None, None).detector == "haar"  # not overridden by a default of its own
        assert results and all(r.score == 1.0 for r in results)  # Haar's score
    finally:
        _default.cache_clear()


def test_each_face_gets_the_score_of_the_detection_its_track_came_from(frames, analyzer):
    from fer_pipeline.producers.detection import build_detector

    p = analyzer.settings.producer
    raw = [d for d in build_detector(p).detect(frames[250]) if max(d.box[2], d.box[3]) >= p.min_face]
    results = analyzer.analyze(frames[250])
    assert len(results) == 4
    assert sorted(r.score for r in results) == sorted(d.score for d in raw if d.score >= p.track_score)
