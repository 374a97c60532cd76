"""The benchmarks' pure helpers: statistics, tables, verdicts and accounting (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks._common import fmt, percentiles, ratio, summarize_latencies, table, write_result
from benchmarks._harness import Proc, final_counters
from benchmarks.detection import fit, matched
from benchmarks.pipeline import accounting, holds


def test_percentiles_interpolate_like_numpy():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.5]
    got = percentiles(values, (0, 50, 95, 99, 100))
    for q in (0, 50, 95, 99, 100):
        assert got[f"p{q}"] == pytest.approx(float(np.percentile(values, q)))


def test_percentiles_ignore_non_finite_and_handle_empty():
    assert percentiles([1.0, float("nan"), 3.0, float("inf")], (50,)) == {"p50": 2.0}
    assert percentiles([], (50, 99)) == {"p50": None, "p99": None}
    with pytest.raises(ValueError, match="within"):
        percentiles([1.0], (101,))


def test_summarize_latencies_reports_milliseconds():
    s = summarize_latencies([0.010, 0.020, 0.030])
    assert s["n"] == 3 and s["p50_ms"] == pytest.approx(20.0) and s["max_ms"] == pytest.approx(30.0)
    assert s["mean_ms"] == pytest.approx(20.0)
    assert summarize_latencies([])["p99_ms"] is None


def test_ratio_and_fmt():
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None
    assert fmt(None) == "-" and fmt(True) == "yes" and fmt(1234567) == "1,234,567"
    assert fmt(1234.567, 2) == "1,234.57" and fmt("x") == "x"


def test_table_aligns_numbers_right_and_text_left():
    out = table(["name", "faces/s"], [["tutorial", 15.0], ["worker", 1234.5]]).splitlines()
    assert out[0] == "| name     | faces/s |"
    assert out[1] == "|----------|--------:|"
    assert out[3] == "| worker   | 1,234.5 |"
    assert len({len(line) for line in out}) == 1
    with pytest.raises(ValueError, match="cells"):
        table(["a", "b"], [[1]])


def test_write_result_is_json_with_timestamp(tmp_path):
    path = write_result("demo", {"value": np.float32(1.5), "where": Path("/x")}, tmp_path)
    data = json.loads(path.read_text())
    assert data["benchmark"] == "demo" and data["value"] == 1.5 and data["where"] == "/x" and "created" in data


def test_matched_is_one_to_one_at_iou_half():
    ref = [(0, 0, 100, 100), (200, 200, 50, 50)]
    assert matched(ref, [(5, 5, 100, 100)]) == 1
    assert matched(ref, [(5, 5, 100, 100), (2, 2, 100, 100)]) == 1  # two candidates, one face
    assert matched(ref, [(60, 60, 100, 100)]) == 0  # IoU ~0.09
    assert matched(ref, ref) == 2 and matched([], ref) == 0


def test_fit_letterboxes_without_distortion():
    image = np.full((36, 64, 3), 200, np.uint8)
    out = fit(image, 64, 48)
    assert out.shape == (48, 64, 3)
    assert (out[:6] == 0).all() and (out[-6:] == 0).all() and (out[6:42] == 200).all()


def _run(**over) -> dict:
    r = {"crops_dropped": 0, "crops_trimmed_unread": 0, "latency": {"p99_ms": 80.0}, "offered_faces_per_s": 480.0,
         "labelled_faces_per_s": 478.0, "frames_per_s": 239.0, "cameras": 8}
    r.update(over)
    return r


def test_holds_needs_no_drops_keeping_up_and_latency_bound():
    assert holds(_run(), 100)
    assert not holds(_run(), 50)
    assert not holds(_run(crops_dropped=1), 100)
    assert not holds(_run(labelled_faces_per_s=400.0), 100)
    assert not holds(_run(frames_per_s=200.0), 100)
    assert not holds(_run(latency={"p99_ms": None}), 100)


def test_accounting_checks_every_face_is_published_or_dropped():
    before, after = {"published:p:crops": 10}, {"published:p:crops": 110}
    ok = accounting({"faces": 150, "crops_published": 100, "crops_dropped": 50}, before, after, "p:crops")
    assert ok["ok"] is True and ok["broker_published"] == 100
    bad = accounting({"faces": 151, "crops_published": 100, "crops_dropped": 50}, before, after, "p:crops")
    assert bad["ok"] is False
    assert accounting(None, before, after, "p:crops")["ok"] is None


def test_final_counters_parses_the_producer_log(tmp_path):
    log = tmp_path / "p.log"
    log.write_text("12:00:00 I fer.producer:x: producer run ab12 finished: {'frames': 3, 'faces': 6}\n")
    proc = Proc("p", subprocess.Popen([sys.executable, "-c", "pass"]), log)
    proc.popen.wait()
    assert final_counters(proc) == {"frames": 3, "faces": 6}
    log.write_text("12:00:01 I fer.producer:x: producer h-1 stopped after 2.0s: faces=6 frames=3 run_id=ab12\n")
    assert final_counters(proc) == {"faces": 6, "frames": 3}
    log.write_text("nothing useful\n")
    assert final_counters(proc) is None


def test_bench_cli_rejects_bad_lists():
    from fer_pipeline.cli.bench import _ints
    from fer_pipeline.errors import ConfigError

    assert _ints("1, 2,8") == (1, 2, 8)
    for bad in ("a,b", "0,1", ""):
        with pytest.raises(ConfigError):
            _ints(bad)
    assert _ints("4") == (4,)
