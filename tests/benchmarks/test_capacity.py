"""The capacity benchmark's arithmetic: snapshot differences, the model's prediction, message sizes."""

from __future__ import annotations

import pytest

from benchmarks.capacity import diff, message_sizes, predict


def test_diff_keeps_only_commands_called_in_the_window():
    a = {"cpu_s": 1.0, "cpu_main_s": 0.5, "net_in": 100, "net_out": 50, "cmds": {"xadd": (10, 100), "ping": (5, 5)}}
    b = {"cpu_s": 1.5, "cpu_main_s": 0.7, "net_in": 400, "net_out": 90,
         "cmds": {"xadd": (30, 500), "ping": (5, 5), "exec": (4, 80)}}
    d = diff(a, b)
    assert d["cpu_s"] == pytest.approx(0.5) and d["net_in"] == 300 and d["net_out"] == 40
    assert d["cmds"] == {"xadd": {"calls": 20, "usec": 400}, "exec": {"calls": 4, "usec": 80}}


def test_predict_scales_each_role_by_its_own_unit():
    ingredients = {"producer_cpu_us_per_frame": 1000.0, "redis_cpu_us_per_round_trip": 200.0,
                   "cpu_us_per_crop": {"producer": 9e9, "workers": 400.0, "logger": 100.0, "redis": 9e9}}
    point = {"frames_per_s": 500.0, "labelled_per_s": 2000.0, "redis_round_trips_per_s": 250.0}
    got = predict(ingredients, point)
    # producer per frame, workers and logger per crop, Redis per round trip (never per crop).
    assert got == pytest.approx({"producer": 0.5, "workers": 0.8, "logger": 0.2, "redis": 0.05})


def test_message_sizes_are_the_encoded_crops_and_labels():
    sizes = message_sizes()
    assert 48 * 48 < sizes["crop_bytes"] < 48 * 48 + 400  # the pixels and a few hundred bytes of fields
    assert 200 < sizes["label_bytes"] < 1000
    assert sizes["crop_bytes"] < sizes["crop_bytes_in_bundle_of_64"] < sizes["crop_bytes"] + 8
