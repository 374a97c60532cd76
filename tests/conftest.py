"""Shared fixtures: settings isolated by a unique key prefix, fakeredis and real-Redis
transports, the shared data folder (skipped with a reason when absent)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import redis

from fer_pipeline.settings import Settings
from fer_pipeline.streams import StreamKeys
from fer_pipeline.transport import Transport

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("FER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATA_DIR = Path(os.environ.get("FER_DATA_DIR", REPO.parent / "shared" / "data"))
VIDEO_DIR = DATA_DIR / "video"


def make_settings(tmp_path: Path, url: str | None = None, **sections) -> Settings:
    base = Settings(_env_file=None)
    s = base.with_updates(
        redis={"url": url, "prefix": f"test-{uuid.uuid4().hex[:10]}"},
        consumer={"db": tmp_path / "emotions.sqlite", "out_dir": tmp_path / "out", "window": "off"},
    )
    return s.with_updates(**sections) if sections else s


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Settings with a unique prefix and no Redis URL (set one per test when needed)."""
    return make_settings(tmp_path)


@pytest.fixture
def fake_transport(settings) -> Transport:
    import fakeredis

    client = fakeredis.FakeRedis()
    return Transport(client, StreamKeys(settings.redis.prefix), settings)


def _real_redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.skip(f"real Redis not reachable at {REDIS_URL}: {e}")
    return client


@pytest.fixture
def redis_settings(tmp_path) -> Settings:
    """Settings pointing at the real Redis with a unique prefix; keys are removed afterwards."""
    client = _real_redis_or_skip()
    s = make_settings(tmp_path, REDIS_URL)
    yield s
    for key in client.scan_iter(match=f"{s.redis.prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def real_transport(redis_settings) -> Transport:
    t = Transport.connect(redis_settings)
    yield t
    t.close()


@pytest.fixture
def data_dir() -> Path:
    if not (DATA_DIR / "fer2013_publictest.npz").is_file():
        pytest.skip(f"shared data not found at {DATA_DIR} (set FER_DATA_DIR)")
    return DATA_DIR


@pytest.fixture
def video_dir() -> Path:
    if not (VIDEO_DIR / "short_hamilton_clip.mp4").is_file():
        pytest.skip(f"shared videos not found at {VIDEO_DIR} (set FER_DATA_DIR)")
    return VIDEO_DIR


def make_crop_pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


PG_URL = os.environ.get("FER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def pg_schema(tag: str) -> Iterator[str]:
    """A fresh schema in the PostgreSQL at ``FER_TEST_PG_URL`` (dropped afterwards), as the URL
    that selects it; skips the test with the reason when the server or psycopg is missing."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg (the postgres extra) not installed")
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=2)
    except psycopg.Error as e:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {str(e).strip().splitlines()[0]}")
    schema = f"{tag}_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
