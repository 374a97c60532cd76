"""Redis out of memory (maxmemory with noeviction, as compose runs it) or otherwise refusing
writes for a while: every role waits it out like a lost connection and comes back by itself
when Redis does. On a private embedded server, so its configuration can be changed."""

from __future__ import annotations

import threading
import time

import pytest

from fer_pipeline.broker import EmbeddedBroker
from fer_pipeline.consumers.label_logger import LabelLoggerService
from fer_pipeline.errors import BrokerUnavailable
from fer_pipeline.transport import Transport
from fer_pipeline.workers.inference import InferenceWorker
from tests.conftest import make_settings
from tests.factories import crop_payload
from tests.fakes import MeanPredictor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def broker():
    try:
        with EmbeddedBroker.start() as b:
            yield b
    except BrokerUnavailable as e:
        pytest.skip(str(e))


def _until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_every_role_waits_out_a_full_redis_and_resumes(broker, tmp_path):
    s = make_settings(tmp_path, url=broker.url).with_updates(redis={"backoff_initial_s": 0.05, "backoff_max_s": 0.2},
                                                              streams={"block_ms": 50})
    admin = Transport.connect(s)
    worker = InferenceWorker(s, Transport.connect(s), ident="w", predictor=MeanPredictor())
    logger = LabelLoggerService(s, Transport.connect(s), ident="log")
    threads = [threading.Thread(target=svc.run, daemon=True) for svc in (worker, logger)]
    for th in threads:
        th.start()
    try:
        admin.publish(admin.keys.crops, [crop_payload(i) for i in range(5)], 1000)
        _until(lambda: logger.counters["labels_logged"] == 5, 30, "the first crops logged")
        admin._client.config_set("maxmemory-policy", "noeviction")
        admin._client.config_set("maxmemory", 1)  # every write is refused with OOM from now on
        # The next heartbeat (each beats every second) or ack of each role is refused.
        _until(lambda: worker.counters["reconnects"] > 0 and logger.counters["reconnects"] > 0, 10,
               "both roles to meet the full Redis")
        time.sleep(0.5)
        assert all(th.is_alive() for th in threads)
        admin._client.config_set("maxmemory", 0)  # room again: nothing to restart
        admin.publish(admin.keys.crops, [crop_payload(i) for i in range(5, 12)], 1000)
        _until(lambda: logger.counters["labels_logged"] == 12, 30, "the crops after the outage logged")
        assert all(th.is_alive() for th in threads)
    finally:
        for svc in (worker, logger):
            svc.request_stop()
        for th in threads:
            th.join(10)
        admin.close()
    assert logger.counters["dead_letters"] == 0 and worker.counters["crops_labelled"] == 12
