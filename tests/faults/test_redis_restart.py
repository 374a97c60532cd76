"""Redis restarted in the middle of a run (a private `redis-server` on a free loopback port,
never the shared one): every role reconnects with backoff and keeps going, and what could
not be delivered is counted.

With no persistence a restart empties Redis: entries still in the streams (crops not yet
labelled, labels not yet logged), the consumer groups and the stats hash are gone. The test
measures that loss instead of pretending it away; AOF or a replica is the remedy (see
RELIABILITY.md).
"""

from __future__ import annotations

import time

import pytest

from fer_pipeline.broker import EmbeddedBroker
from fer_pipeline.streams import LOGGER_GROUP, WORKERS_GROUP
from fer_pipeline.transport import Transport
from tests.conftest import make_settings
from tests.faults.conftest import Cluster, client_for, log_rows, replay_spec, stats, wait_alive, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

CROPS = 400
OUTAGE_S = 2.0


@pytest.fixture
def private_redis():
    broker = EmbeddedBroker.start()
    holder = {"broker": broker}
    try:
        yield holder
    finally:
        holder["broker"].stop()


def test_redis_restart_mid_run_every_role_reconnects_and_losses_are_counted(private_redis, tmp_path, data_dir,
                                                                             record):
    broker = private_redis["broker"]
    version = broker.version_text
    port = int(broker.url.rsplit(":", 1)[1].split("/")[0])
    s = make_settings(tmp_path, broker.url, redis={"backoff_initial_s": 0.1, "backoff_max_s": 1.0},
                      worker={"reclaim_every_s": 0.2})
    prefix = s.redis.prefix
    crops, labels = f"{prefix}:crops", f"{prefix}:labels"
    cluster = Cluster(s, tmp_path / "logs")
    try:
        r = client_for(s)
        logger = cluster.start("logger", "logger", "--ident", "log")
        display = cluster.start("display", "display", "--ident", "disp")
        worker = cluster.start("worker", "worker", "--ident", "w")
        wait_alive(r, prefix, {"logger:log", "display:disp", "worker:w"}, [logger, display, worker])
        # 40 fps, 2 faces: 200 frames over 5 s; Redis goes away for OUTAGE_S in the middle.
        producer = cluster.start("producer", "producer", "--source", replay_spec(data_dir, fps=40, limit=CROPS),
                                 "--camera-id", "replay")
        db = s.consumer.db
        wait_until(lambda: len(log_rows(db)) >= 60, 60, "60 rows in the log")
        before = stats(r, prefix)
        broker.stop()  # SIGTERM; --save "" and no AOF: the data is gone
        time.sleep(OUTAGE_S)
        rows_during_outage = len(log_rows(db))
        private_redis["broker"] = broker = EmbeddedBroker.start(port=port)
        r = client_for(s)

        assert producer.wait(60) == 0, producer.log()[-3000:]
        # The producer announced its camera again to the emptied Redis (a display started now finds it).
        assert r.smembers(f"{prefix}:cameras") == {b"replay"}
        t = Transport.connect(s)
        try:
            # backlog() copes with Redis 6.2 (no "lag" in XINFO), which the embedded broker may be.
            wait_until(lambda: t.backlog(labels, LOGGER_GROUP) == (0, 0) and t.backlog(crops, WORKERS_GROUP) == (0, 0),
                       30, "the pipeline to drain after the restart")
        finally:
            t.close()
        for p in (worker, logger, display):
            assert p.alive, f"{p.name} died: {p.log()[-3000:]}"
            assert p.stop() == 0, p.log()[-3000:]

        after = stats(r, prefix)
        rows = log_rows(db)
        prod = producer.counters()
        # The producer counted what it could not deliver; everything else went out.
        assert prod["crops_dropped"] > 0
        assert prod["crops_published"] + prod["crops_dropped"] == CROPS
        # The stats hash restarted from zero with Redis: it holds only post-restart publications,
        # and every crop published after the restart reached the log.
        published_after = after[f"published:{crops}"]
        assert 0 < published_after < prod["crops_published"]
        assert len(rows) == len({row[0] for row in rows})
        assert len(rows) >= rows_during_outage + published_after
        lost = int(prod["crops_published"]) - len(rows)  # published, then erased by the restart
        assert 0 <= lost <= prod["crops_published"] - published_after
        for p, role in ((worker, "worker"), (logger, "logger"), (display, "display")):
            text = p.log()
            assert "Redis unreachable" in text and "Redis reachable again" in text, f"{role}: {text[-2000:]}"
            # The restart emptied Redis: every role noticed by its epoch, and says the data are gone.
            assert "Redis lost its data" in text and "redis_data_lost=1" in text, f"{role}: {text[-2000:]}"
            assert "Traceback" not in text, f"{role}: {text[-3000:]}"
            assert p.counters()["reconnects"] >= 1
        assert "Traceback" not in producer.log()
        record(redis_server=version, outage_s=OUTAGE_S, faces=CROPS, published=int(prod["crops_published"]), dropped_while_down=int(prod["crops_dropped"]),
               published_before_restart_per_stats=before.get(f"published:{crops}", 0),
               published_after_restart=published_after, rows_in_log=len(rows), lost_with_redis_memory=lost,
               worker_reconnects=int(worker.counters()["reconnects"]),
               logger_reconnects=int(logger.counters()["reconnects"]),
               display_reconnects=int(display.counters()["reconnects"]),
               dead_letters=after.get("dead_letters", 0))
    finally:
        cluster.kill_all()
