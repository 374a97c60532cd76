"""Run ids: readable, sortable, safe in file names and crop ids; restarts marked."""

from __future__ import annotations

import re
import time

import pytest
from pydantic import ValidationError

from fer_pipeline.run_ids import RUN_ID_PATTERN, new_run_id, restarted
from fer_pipeline.settings import ProducerSettings


def test_a_new_run_id_starts_with_its_local_start_time_and_differs_each_time():
    now = time.mktime((2026, 12, 3, 18, 15, 2, 0, 0, -1))
    ids = {new_run_id(now) for _ in range(20)}
    assert all(i.startswith("20261203-181502-") for i in ids) and len(ids) > 1
    assert all(re.fullmatch(RUN_ID_PATTERN, i) for i in ids)


def test_restarts_are_marked_on_the_base_run_id():
    assert restarted("r1", 0) == "r1"
    assert restarted("r1", 1) == "r1~1" and restarted("r1~1", 2) == "r1~2"
    assert re.fullmatch(RUN_ID_PATTERN, restarted(new_run_id(), 12))


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "x" * 57, "a~b", "a~1~2", "a%b"])
def test_a_run_id_setting_refuses_what_would_break_crop_ids_or_file_names(bad):
    with pytest.raises(ValidationError):
        ProducerSettings(run_id=bad)
