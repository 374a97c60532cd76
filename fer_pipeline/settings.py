"""One settings object for every role.

Built once at the CLI boundary (env prefix ``FER_``, nested with ``__``, e.g.
``FER_WORKER__MAX_BATCH=64``), command-line flags applied on top with
``model_copy(update=...)``, then passed down to constructors. No module-level instance.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    StringConstraints,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from fer_pipeline.run_ids import RUN_ID_PATTERN


def shipped_path(name: str) -> Path:
    """A folder the project ships (``models``, ``demo``): the package ``fer_pipeline.<name>``,
    which pyproject maps to the checkout's top-level folder (editable install) or installs
    inside the package (wheel); either way a plain folder on disk."""
    return Path(str(resources.files(f"fer_pipeline.{name}")))


DEFAULT_MODEL_DIR = shipped_path("models")


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


def _empty_is_none(v: object) -> object:
    return None if v in ("", None) else v  # compose passes an unset variable (DASHBOARD_TOKEN) as ""


def _secret_json(secret: SecretStr | None, info: SerializationInfo) -> str | None:
    # Masked in JSON, except for settings_env, which hands the settings to child processes.
    if secret is None:
        return None
    return secret.get_secret_value() if (info.context or {}).get("reveal_secrets") else str(secret)


# A secret setting (token, password-bearing URL): masked in reprs, logs and JSON, empty means unset.
Secret = Annotated[SecretStr | None, BeforeValidator(_empty_is_none), PlainSerializer(_secret_json, when_used="json")]


class RedisSettings(_Section):
    """Redis connection and retry settings (env FER_REDIS__*)."""

    # None means "start an embedded broker" for `up`; the single-role commands need a URL.
    url: str | None = None
    prefix: str = "fer"
    socket_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    # Reconnect backoff for every role: first wait, cap.
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            hint = f" (did you mean redis://{v}?)" if "://" not in v and "@" not in v else ""  # no password echoed
            msg = f"a Redis URL starts with redis://, rediss:// or unix://{hint}"
            raise ValueError(msg)
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in " \t\n{}"):
            msg = "prefix must be non-empty without spaces or braces"
            raise ValueError(msg)
        return v


class StreamSettings(_Section):
    """Stream bounds, the producers' crop backlog limit, message size and read blocking (env FER_STREAMS__*)."""

    # Bounds keep a stalled consumer from exhausting Redis memory; trimmed unread
    # entries are counted (see transport.publish).
    crops_maxlen: int = Field(20_000, ge=10)
    labels_maxlen: int = Field(50_000, ge=10)
    frames_maxlen: int = Field(300, ge=10)
    dead_maxlen: int = Field(10_000, ge=10)
    # A dead letter keeps this much of the payload (plus its size and SHA-256): bad input alone
    # can no longer fill Redis, the dead stream holds at most about dead_maxlen x this. A crop
    # message (2.4 KB) is kept whole; a frame's JPEG is cut.
    dead_payload_bytes: int = Field(8_192, ge=256, le=1_000_000)
    # Producers drop new crops (counted) rather than publish into a backlog this deep (in
    # any one shard: crops_maxlen bounds each shard's stream too).
    max_crop_backlog: int = Field(5_000, ge=1)
    max_payload_bytes: int = Field(1_000_000, ge=1024)
    block_ms: int = Field(500, ge=1)
    # The crops and labels streams split by camera into this many shards (streams.py), each on
    # its own hash tag: on Redis Cluster the shards spread over the masters. 1 keeps today's
    # keys on a plain Redis. Every process of a deployment must agree; change it only with the
    # streams drained (a camera's shard moves with it).
    shards: int = Field(1, ge=1, le=1024)


DetectorName = Literal["blazeface", "blazeface-full", "blazeface-short", "res10", "haar"]
DETECTORS: tuple[str, ...] = get_args(DetectorName)  # the names, in the order help texts list them


class ProducerSettings(_Section):
    """Producer detection, tracking, cropping, pacing and frame publishing settings (env FER_PRODUCER__*)."""

    # Face detector by name (producers/detection): BlazeFace (full range, plus short range for
    # close-ups) finds the most faces per millisecond on real video (README's detector table);
    # "haar" is the tutorial's.
    detector: DetectorName = "blazeface"
    # Which run the crops belong to (run_ids.py); None: the producer names a new run. `up`
    # gives all its producers one.
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN)
    # Sources when `producer` gets no --source (a JSON list in FER_PRODUCER__SOURCES): a camera
    # URL that holds a password belongs here, not in the arguments every local user can read;
    # `up` hands each producer its source this way.
    sources: list[str] = Field(default_factory=list)
    # Minimum detector score (0 = the detector's own default; Haar has no score). BlazeFace's
    # short-range boxes keep their own 0.6 (alone, that model invents large boxes).
    detect_score: float = Field(0.0, ge=0.0, lt=1.0)
    # Detections scoring below this only continue a tracked face, never start one (ByteTrack's
    # two thresholds: unsure boxes keep a known face tracked, but add no false faces).
    track_score: float = Field(0.5, ge=0.0, le=1.0)
    # Turn each crop upright by the eye line where the detector returns eyes (BlazeFace).
    align: bool = True
    # Haar parameters (the tutorial's 1.3 / 5); min_face also bounds the other detectors.
    scale_factor: float = Field(1.3, gt=1.0)
    min_neighbors: int = Field(5, ge=0)
    min_face: int = Field(20, ge=8)
    # Detect on a frame downscaled to at most this width (0 = full size): Haar cost
    # grows with pixels, and faces big enough to classify survive the downscale.
    detect_width: int = Field(0, ge=0)
    # Detect every Nth frame; the Kalman tracker predicts each face in between. 3 keeps 8
    # cameras of 640x480 at 30 fps in real time on 2 cores with BlazeFace and costs about one
    # face in a hundred of recall on the annotated real frames (BENCHMARKS.md, section 4).
    detect_every: int = Field(3, ge=1)
    realtime: bool = True
    loop: bool = False
    publish_frames: bool = True
    frame_jpeg_quality: int = Field(80, ge=10, le=100)
    frame_max_width: int = Field(640, ge=64)
    tracker_iou: float = Field(0.3, gt=0.0, lt=1.0)
    tracker_max_missed: int = Field(15, ge=0)
    # Frames a tracked face keeps its predicted box without a detection (between detections,
    # or when the detector blinks); longer leaves ghost boxes after a person leaves.
    tracker_coast: int = Field(8, ge=0)
    # Detections in a row that may miss a tracked face before its predicted box is no longer
    # shown (a detector's blink); more turn ghost boxes into false faces.
    tracker_coast_misses: int = Field(1, ge=0)
    # A frame whose 32x24 thumbnail differs from the last by more than this many gray levels
    # on average is a cut: tracks are dropped and detection runs (0 = never). Cuts measure
    # 26-30 in the demo clip, camera motion under 13.
    scene_cut: float = Field(20.0, ge=0.0, le=255.0)
    max_image_pixels: int = Field(40_000_000, ge=1)
    # FFmpeg threads decoding each video file (0 = FFmpeg's own choice) and OpenCV's threads in
    # a producer process (0 = OpenCV's default): cameras are the parallelism, so one each saves
    # the CPU that helper threads spend contending (a third of decoding's).
    decode_threads: int = Field(1, ge=0, le=64)
    opencv_threads: int = Field(1, ge=0, le=64)


class WorkerSettings(_Section):
    """Worker model, runtime, batching and reclaim settings (env FER_WORKER__*)."""

    runtime: Literal["litert", "keras"] = "litert"
    model: Path = DEFAULT_MODEL_DIR / "model.json"
    # Serve the dynamic-range int8 TFLite file (shipped only when within 0.5 point of float):
    # "auto" does so where the CPU has int8 dot-product instructions (VNNI, Arm dotprod), which
    # make it 4x faster than float; without them it gains next to nothing.
    int8: Literal["auto"] | bool = "auto"
    max_batch: int = Field(64, ge=1, le=4096)
    max_wait_ms: float = Field(5.0, ge=0.0)
    threads: int = Field(1, ge=1)
    reclaim_idle_ms: int = Field(10_000, ge=100)
    reclaim_every_s: float = Field(2.0, gt=0.0)
    # The crop shards this worker reads (FER_WORKER__SHARDS='[0, 1]'); empty: every shard. A
    # worker stays on one shard while it has crops, at most shard_dwell_s, then moves on.
    shards: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    shard_dwell_s: float = Field(0.2, gt=0.0)


# A PostgreSQL emotion log (multi-machine deployments); anything else is a SQLite file path.
PgUrl = Annotated[str, StringConstraints(pattern=r"^postgres(ql)?://")]


class ConsumerSettings(_Section):
    """Emotion log, display and retention settings of the consumers (env FER_CONSUMER__*)."""

    db: Path | PgUrl = Path("out/emotions.sqlite")
    out_dir: Path = Path("out")
    window: Literal["auto", "on", "off"] = "auto"
    # How long the display waits for a frame's labels before drawing it with the last
    # known label of each track.
    label_wait_ms: int = Field(500, ge=0)
    fps: float = Field(0.0, ge=0.0)  # 0 = the camera's own rate from its frames
    # The display's annotated video: 0 = one file per camera and run (<camera>-<run>.mp4);
    # N = a new file every N seconds of video (<camera>-<run>-001.mp4, -002, ...), so a
    # long run yields finished, playable files as it goes.
    video_segment_s: float = Field(0.0, ge=0.0)
    # Each display group sees every frame and label: a second screen (or a recorder beside a
    # window) takes its own group; processes in one group would split the frames between them.
    display_group: str = Field("display", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Privacy retention: `fer-pipeline retention` deletes stream entries (face crops, frames,
    # labels) older than this from Redis (0 = only the MAXLEN bounds apply), and `prune`
    # deletes log rows older than log_retention_days (0 = keep).
    stream_max_age_s: float = Field(0.0, ge=0.0)
    log_retention_days: float = Field(0.0, ge=0.0)
    # Frames from the wire larger than this (read from the JPEG header) are dead-lettered,
    # not decoded: producers send at most frame_max_width wide, so this only stops bombs.
    max_frame_pixels: int = Field(16_000_000, ge=1)


class DashboardSettings(_Section):
    """Where the dashboard listens and who may read it (env FER_DASHBOARD__*)."""

    host: str = "127.0.0.1"  # loopback: only this machine; 0.0.0.0 for every interface
    port: int = Field(8000, ge=1, le=65535)
    # When set, /api/* and /metrics need it: `Authorization: Bearer <token>` or `?token=<token>`
    # (open the page as http://host:port/?token=<token>). Set one for any non-loopback bind.
    token: Secret = None


class SinkSettings(_Section):
    """Result sinks: MQTT and webhooks (env FER_SINK__*; `fer-pipeline sink`)."""

    # Signs each webhook body (X-Fer-Signature: sha256=<HMAC>); from the environment only,
    # never a command-line flag (every local user can read a process's arguments).
    webhook_secret: Secret = None
    # Where `fer-pipeline sink mqtt|webhook` sends (when --url is not given), and how `up --sink`
    # hands the URL to its child: in the environment, never in its arguments, which every local
    # user can read (a broker URL may hold a password). Checked by the sink that uses it.
    mqtt_url: Secret = None
    webhook_url: Secret = None
    # Seconds one MQTT publish acknowledgement or one HTTP request may take before the
    # target counts as down (the labels stay pending and are retried with backoff).
    timeout_s: float = Field(10.0, gt=0.0)
    # Wall-clock seconds without a label of a track before its open episode ends (the track
    # is gone); labels of the same camera captured max_gap_s later end it sooner.
    track_timeout_s: float = Field(3.0, gt=0.0)


class Settings(BaseSettings):
    """Every tunable of the pipeline; see the README for the env-var names."""

    model_config = SettingsConfigDict(env_prefix="FER_", env_nested_delimiter="__", extra="ignore")

    redis: RedisSettings = RedisSettings()
    streams: StreamSettings = StreamSettings()
    producer: ProducerSettings = ProducerSettings()
    worker: WorkerSettings = WorkerSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    dashboard: DashboardSettings = DashboardSettings()
    sink: SinkSettings = SinkSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def with_updates(self, **sections: dict) -> Settings:
        """Copy with some fields of some sections replaced; None values are ignored."""
        update = {}
        for name, fields in sections.items():
            fields = {k: v for k, v in fields.items() if v is not None}
            if fields:
                section = getattr(self, name)
                update[name] = section.model_validate({**section.model_dump(), **fields})
        return self.model_copy(update=update)
