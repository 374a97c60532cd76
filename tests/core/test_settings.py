from __future__ import annotations

import pytest
from pydantic import ValidationError

from fer_pipeline.settings import Settings
from fer_pipeline.supervisor import settings_env


def test_env_prefix_and_nested_delimiter(monkeypatch):
    monkeypatch.setenv("FER_WORKER__MAX_BATCH", "17")
    monkeypatch.setenv("FER_REDIS__PREFIX", "site1")
    s = Settings()
    assert s.worker.max_batch == 17 and s.redis.prefix == "site1"


def test_with_updates_ignores_none_and_validates():
    s = Settings().with_updates(worker={"max_batch": None, "max_wait_ms": 3.0})
    assert s.worker.max_wait_ms == 3.0 and s.worker.max_batch == Settings().worker.max_batch
    with pytest.raises(ValidationError):
        Settings().with_updates(redis={"url": "http://nope"})


def test_settings_travel_to_child_processes_unchanged(monkeypatch, tmp_path):
    s = Settings().with_updates(redis={"url": "redis://127.0.0.1:1234/2", "prefix": "p"},
                                worker={"max_batch": 9}, consumer={"db": tmp_path / "x.sqlite"})
    for k, v in settings_env(s).items():
        if k.startswith("FER_"):
            monkeypatch.setenv(k, v)
    assert Settings() == s
