from __future__ import annotations

import pytest

from fer_pipeline.workers.batcher import Batcher


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_closes_when_full():
    b = Batcher(max_batch=3, max_wait_s=10.0, clock=Clock())
    b.add([1, 2])
    assert not b.ready() and b.room == 1
    b.add([3, 4])
    assert b.ready()
    assert b.take() == [1, 2, 3]
    assert b.items == [4]  # the overflow opens the next batch


def test_closes_after_max_wait_of_oldest_item():
    clock = Clock()
    b = Batcher(max_batch=100, max_wait_s=0.005, clock=clock)
    b.add(["a"])
    clock.t = 0.004
    b.add(["b"])
    assert not b.ready()
    assert b.wait_left() == pytest.approx(0.001)
    clock.t = 0.0051
    assert b.ready()
    assert b.take() == ["a", "b"]
    assert not b.ready() and len(b) == 0


def test_empty_batch_is_never_ready_and_rejects_bad_size():
    assert not Batcher(max_batch=1, max_wait_s=0.0).ready()
    with pytest.raises(ValueError):
        Batcher(max_batch=0, max_wait_s=1.0)
