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
    from benchmarks.__main__ import _ints
    from fer_pipeline.errors import ConfigError

    assert _ints("1, 2,8") == (1, 2, 8)
    for bad in ("a,b", "0,1", ""):
        with pytest.raises(ConfigError):
            _ints(bad)
    assert _ints("4") == (4,)


def test_face_metrics_match_and_score():
    from benchmarks.face_metrics import Identities, Tally, match, score_frame

    truth = [(0, 0, 50, 50), (100, 0, 50, 50)]
    found = [(102, 2, 50, 50), (1, 1, 48, 48), (300, 300, 20, 20)]
    assert sorted(match(truth, found)) == [(0, 1), (1, 0)]
    s = score_frame(truth, [], found)
    assert len(s.matched) == 2 and s.false == 1
    # A box on an ignore region (a face too small to require) is neither found nor false.
    s2 = score_frame(truth[:1], [(300, 300, 22, 22)], found)
    assert len(s2.matched) == 1 and s2.false == 1  # (102, 2) matches nothing required or ignored
    tally = Tally()
    tally.add(s)
    tally.add(score_frame([], [], []))
    d = tally.as_dict()
    assert d["recall"] == 1.0 and d["false_per_frame"] == 0.5 and d["frames_with_face_found"] == 1.0
    ids = Identities()
    for t in (1, 1, 2, 2, 1):
        ids.add(7, t)
    ids.add(8, 2)
    out = ids.as_dict()
    assert out["switches"] == 2 and out["fragments_per_identity"] == 1.5 and out["shared_ids"] == 1


# -- the real-video scenario: benchmarks/cameras.py ---------------------------------------------------------------
def test_common_letterbox_centres_on_black():
    from benchmarks._common import letterbox as common_letterbox

    out, scale, x0, y0 = common_letterbox(np.full((336, 596, 3), 90, np.uint8), 640, 480)
    assert out.shape == (480, 640, 3) and scale == pytest.approx(640 / 596)
    assert (x0, y0) == (0, 59) and (out[:y0] == 0).all() and (out[y0 + 361:] == 0).all()
    assert abs(int(out[240, 320, 0]) - 90) <= 1


def test_lag_profile_measures_how_far_behind_a_camera_ends():
    from benchmarks.cameras import lag_profile

    fps = 10.0
    on_time = {i: 100.0 + i / fps for i in range(50)}
    p = lag_profile(on_time, fps, settle_at=101.0)
    assert p["lag_s"] == pytest.approx(0.0, abs=1e-9) and p["max_lag_s"] == pytest.approx(0.0, abs=1e-9)
    assert p["fps_after_settle"] == pytest.approx(10.0) and p["settle_frame"] == 10
    # Half a second lost at start-up (frame 1 late), then 0.01 s more every frame after frame 20.
    late = {i: 100.0 + i / fps + (0.5 if i else 0.0) + max(0, i - 20) * 0.01 for i in range(50)}
    p = lag_profile(late, fps, settle_at=103.0)
    assert p["lag_s"] == pytest.approx(0.5 + 29 * 0.01) and p["max_lag_s"] == pytest.approx(p["lag_s"])
    assert p["lag_at_settle_s"] == pytest.approx(0.5 + 5 * 0.01)  # frame 25 is the first at or after 103 s
    assert p["lag_growth_s"] == pytest.approx(24 * 0.01) and p["first_at"] == pytest.approx(100.0)
    assert p["wall_s"] == pytest.approx(4.9 + 0.79)
    # A camera first seen at frame 5 (no face before): its start is extrapolated back.
    assert lag_profile({5: 10.5, 6: 10.6}, fps)["first_at"] == pytest.approx(10.0)
    assert lag_profile({}, fps)["lag_s"] is None


def test_frames_by_camera_keeps_one_time_per_frame():
    from benchmarks._harness import Observed
    from benchmarks.cameras import frames_by_camera

    seen = [Observed("a", 1.0, 0, 0, 0, None, 0), Observed("a", 1.0, 0, 0, 0, None, 0),
            Observed("a", 1.1, 0, 0, 0, None, 3), Observed("b", 2.0, 0, 0, 0, None, 0),
            Observed("c", 2.0, 0, 0, 0, None)]  # no frame index: not counted
    assert frames_by_camera(seen) == {"a": {0: 1.0, 3: 1.1}, "b": {0: 2.0}}


def test_cpu_share_and_interpolated_cpu():
    from benchmarks.cameras import cpu_at, cpu_share

    before = {"user": 100, "nice": 0, "system": 50, "idle": 800, "iowait": 0, "irq": 0, "softirq": 0, "steal": 0}
    after = {**before, "user": 250, "system": 100, "idle": 850, "steal": 50}
    share = cpu_share(before, after)
    assert share == {"busy": pytest.approx(200 / 300), "steal": pytest.approx(50 / 300), "idle": pytest.approx(50 / 300)}
    assert cpu_share(before, before)["busy"] is None
    samples = [(10.0, 1.0), (11.0, 2.0), (12.0, 2.5)]
    assert cpu_at(samples, 10.5) == pytest.approx(1.5) and cpu_at(samples, 12.0) == pytest.approx(2.5)
    assert cpu_at(samples, 9.0) is None and cpu_at([], 1.0) is None


def test_parse_finished_keeps_float_counters():
    from benchmarks.cameras import parse_finished

    text = ("12:00:00 I fer.producer:x: producer run ab12 finished: {'frames': 3, 'detect_ms': 20.5}\n"
            "12:00:00 I fer.producer:x: producer x stopped after 2.0s: detect_ms=20.5 frames=3\n")
    assert parse_finished(text) == {"frames": 3, "detect_ms": 20.5}
    assert parse_finished("producer run ab finished: {oops\n") is None
    assert parse_finished("nothing here\n") is None


def test_real_video_flag_of_the_pipeline_benchmark_forwards_to_cameras(monkeypatch):
    from benchmarks import cameras, pipeline

    seen = []
    monkeypatch.setattr(cameras, "main", lambda argv: seen.append(argv) or 0)
    assert pipeline.main(["--real-video", "--cameras-real", "8", "--detect-every", "1,2,3", "--cameras-real=4"]) == 0
    assert seen == [["--cameras", "8", "--detect-every", "1,2,3", "--cameras=4"]]


def test_the_product_cli_has_no_bench_command():
    from typer.testing import CliRunner

    from fer_pipeline.cli import app

    r = CliRunner().invoke(app, ["bench", "--help"])
    assert r.exit_code != 0 and "No such command" in r.output


def test_python_m_benchmarks_lists_the_suite():
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    for name in ("inference", "pipeline", "cameras", "detection", "report", "all"):
        assert name in r.stdout


def test_bench_cameras_command_passes_what_run_accepts(monkeypatch):
    import inspect

    from typer.testing import CliRunner

    from benchmarks import cameras
    from benchmarks.__main__ import bench_app as app
    from fer_pipeline.errors import ConfigError

    signature, got = inspect.signature(cameras.run), {}
    monkeypatch.setattr(cameras, "run", lambda **kw: got.update(kw) or {})
    result = CliRunner().invoke(app, ["cameras", "--cameras", "4,8", "--seconds", "5"])
    assert result.exit_code == 0, result.output
    signature.bind(**got)  # every option is a keyword of the real run()
    assert got["cameras"] == (4, 8) and got["detect_every"] == (1, 2, 3) and got["frames"] is False
    assert got["seconds"] == 5.0 and got["profile_frames"] == 300 and got["detector"] == cameras.DEFAULT_DETECTOR
    got.clear()
    bad = CliRunner().invoke(app, ["cameras", "--detector", "nope"])
    assert isinstance(bad.exception, ConfigError) and not got  # refused before any video is prepared
