from __future__ import annotations

import math

import pytest

from fer_pipeline.producers.detection.framing import FRAMINGS, Framing, framing_for


@pytest.mark.parametrize("roll", [0.0, 12.0, -9.0])
def test_apply_and_invert_round_trip(roll):
    framing = Framing(scale=1.3, dx=0.02, dy=-0.11)
    box = (100, 80, 60, 72)
    square = framing.apply(box, roll)
    assert square[2] == pytest.approx(square[3]) == pytest.approx(1.3 * math.sqrt(60 * 72))
    back = framing.invert(square, aspect=60 / 72, roll=roll)
    assert back == pytest.approx(box, abs=1e-6)


def test_fit_recovers_a_known_framing_from_noisy_pairs():
    import random

    truth = Framing(scale=1.25, dx=-0.03, dy=0.08)
    rng = random.Random(1)
    pairs = []
    for _ in range(200):
        w = rng.uniform(30, 180)
        h = w * rng.uniform(0.9, 1.2)
        box = (rng.randint(0, 400), rng.randint(0, 300), round(w), round(h))
        roll = rng.uniform(-15, 15)
        x, y, side, _ = truth.apply(box, roll)
        jitter = rng.gauss(0, 0.02) * side
        pairs.append((box, (x + jitter, y - jitter, side * (1 + rng.gauss(0, 0.02)), side), roll))
    fitted = Framing.fit(pairs)
    assert fitted.scale == pytest.approx(truth.scale, abs=0.02)
    assert fitted.dx == pytest.approx(truth.dx, abs=0.02)
    assert fitted.dy == pytest.approx(truth.dy, abs=0.02)
    with pytest.raises(ValueError):
        Framing.fit([])


def test_every_shipped_detector_has_a_fitted_framing():
    from fer_pipeline.settings import DETECTORS

    assert set(FRAMINGS) == set(DETECTORS)
    assert framing_for("unknown") == Framing()
