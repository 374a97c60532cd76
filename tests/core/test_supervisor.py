"""`up`'s bookkeeping of its children: what no process's own counters account for."""

from __future__ import annotations

from fer_pipeline.supervisor import Supervisor


def _child(sup: Supervisor, name: str, role: str, *runs: str, restarts: int = 0):
    c = sup.add(name, role, [role])
    c.log_path.parent.mkdir(parents=True, exist_ok=True)
    c.log_path.write_text("".join(f"12:00:00 I fer.{role}:x: {role} x stopped after 2.5s: {r} model=m-1 run_id=7a\n"
                                  for r in runs))
    c.restarts = restarts
    return c


def test_vanished_crops_and_labels_come_from_the_processes_final_counters(settings, fake_transport, tmp_path):
    sup = Supervisor(settings, fake_transport, tmp_path / "logs")
    _child(sup, "producer-0", "producer", "crops_published=669 crops_dropped=12")
    # A worker restarted once: both runs' lines count.
    _child(sup, "worker-0", "worker", "crops_labelled=300 dead_letters=1", "crops_labelled=200 dead_letters=0",
           restarts=1)
    _child(sup, "logger", "logger", "labels_logged=344 duplicates_ignored=2 dead_letters=0 labels_missing=3")
    assert sup.unaccounted() == {"crops": 669 - 500 - 1, "labels": 500 - 344 - 2}


def test_no_figure_when_a_process_ended_without_its_counters(settings, fake_transport, tmp_path):
    sup = Supervisor(settings, fake_transport, tmp_path / "logs")
    _child(sup, "producer-0", "producer", "crops_published=10")
    _child(sup, "worker-0", "worker", "crops_labelled=10 dead_letters=0", restarts=1)  # the crashed run left none
    _child(sup, "logger", "logger", "labels_logged=10 duplicates_ignored=0 dead_letters=0")
    assert sup.unaccounted() is None


def test_a_restarted_producer_continues_the_run_under_a_run_id_of_its_own(settings, fake_transport, tmp_path):
    s = settings.with_updates(producer={"run_id": "20261203-181502-a1b2"})
    sup = Supervisor(s, fake_transport, tmp_path / "logs")
    producer, worker = sup.add("producer-0", "producer", ["producer"]), sup.add("worker-0", "worker", ["worker"])
    assert sup.child_settings(producer).producer.run_id == "20261203-181502-a1b2"
    producer.restarts = worker.restarts = 2
    assert sup.child_settings(producer).producer.run_id == "20261203-181502-a1b2~2"
    assert sup.child_settings(worker) is s


def test_final_counters_per_role_only_where_every_child_left_them(settings, fake_transport, tmp_path):
    sup = Supervisor(settings, fake_transport, tmp_path / "logs")
    _child(sup, "producer-0", "producer", "crops_published=10 frames=7")
    _child(sup, "producer-1", "producer", "crops_published=5 frames=3")
    _child(sup, "worker-0", "worker", "crops_labelled=15", restarts=1)  # its crashed first run left no line
    final = sup.final_counters()
    assert set(final) == {"producer"}
    assert sorted(c["frames"] for c in final["producer"]) == [3, 7]


def test_sinks_and_the_dashboard_neither_block_nor_blur_the_accounting(settings, fake_transport, tmp_path):
    sup = Supervisor(settings, fake_transport, tmp_path / "logs")
    _child(sup, "producer-0", "producer", "crops_published=10")
    _child(sup, "worker-0", "worker", "crops_labelled=10 dead_letters=0")
    _child(sup, "logger", "logger", "labels_logged=10 duplicates_ignored=0 dead_letters=0")
    sup.add("dashboard", "dashboard", ["dashboard"])  # uvicorn: no counters line
    sup.add("sink-0", "sink", ["sink", "mqtt", "--group", "sink-mqtt"], group="sink-mqtt",
            settings_update={"sink": {"mqtt_url": "mqtt://x"}})
    assert sup.unaccounted() == {"crops": 0, "labels": 0}
    assert sup.backlog()["sink-0"] == (0, 0)
    assert [c.name for c in sup._stage_children("sink-0")] == ["sink-0"]
    assert [c.name for c in sup._stage_children("workers")] == ["worker-0"]


def test_a_childs_own_settings_reach_it_alone_and_side_outputs_are_not_essential(settings, fake_transport, tmp_path):
    sup = Supervisor(settings, fake_transport, tmp_path / "logs")
    logger = sup.add("logger", "logger", ["logger"])
    sink = sup.add("sink-0", "sink", ["sink", "mqtt"], group="sink-mqtt",
                   settings_update={"sink": {"mqtt_url": "mqtt://u:secret@broker"}})
    dash = sup.add("dashboard", "dashboard", ["dashboard"], settings_update={"dashboard": {"token": "t0k"}})
    assert sup.child_settings(sink).sink.mqtt_url.get_secret_value() == "mqtt://u:secret@broker"
    assert "secret" not in " ".join(sink.args)  # arguments are public (ps); the environment is not
    assert sup.child_settings(dash).dashboard.token.get_secret_value() == "t0k"
    assert sup.child_settings(logger).dashboard.token is None and sup.child_settings(logger).sink.mqtt_url is None
    assert sup.essential([logger, sink, dash]) == [logger]



def test_a_sinks_group_exists_before_any_child_starts(settings, real_transport, tmp_path, monkeypatch):
    """A sink's group reads from "$" (new labels only): made by the supervisor before the
    producers start, a sink slow to start still gets the run's first labels."""
    import fer_pipeline.supervisor as supervisor

    sup = Supervisor(settings, real_transport, tmp_path / "logs")
    sup.add("sink-0", "sink", ["sink", "mqtt"], group="sink-mqtt")
    monkeypatch.setattr(supervisor.Supervisor, "_spawn", lambda self, child: None)
    sup.start()
    assert [g[0] for g in real_transport.groups(real_transport.keys.labels)] == ["sink-mqtt"]
