from __future__ import annotations

from fer_pipeline.backoff import Backoff


def test_waits_double_up_to_the_cap_and_reset_starts_over():
    b = Backoff(0.2, 1.0)
    assert [b.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.2
