"""Live emotion episodes: the report's rules, applied label by label as labels arrive.

The report (``analytics``) finds episodes after the fact; a sink must say "this person
has been happy for a second" while it happens. This module keeps, per (camera, run,
track), the few numbers the report's rules need and runs those rules themselves, not a
copy: the smoothing is ``analytics.smoothing.smoothed_states`` over the track's last
``window`` labels (the same sums, in the same order, so the same states), and the
episodes are ``analytics.episodes.find_episodes`` over the track's runs since its last
finished episode (a few runs: it stays cheap however long the track lives). The
thresholds are ``ReportOptions``' (smooth 5, min confidence 0.4, min face 40 px, min
dwell 1 s, release = min dwell, max gap 1 s): one place for both.

Events:

- ``start``: a known emotion has held ``min_dwell_s`` (flickers shorter than
  ``release_s`` absorbed, as in the report);
- ``end``: another state (``unknown`` included) has held ``release_s``, or the track is
  gone: no label of it for ``track_timeout_s`` (at least ``max_gap_s``), counted on its
  camera's capture clock (labels of its other tracks) or on the wall clock (a camera that
  stopped sending), or the sink stops. The report ends no track at a gap (it only caps the
  time a label stands for at ``max_gap_s``), so a track back within the timeout goes on as
  in the report; the margin over ``max_gap_s`` absorbs labels that parallel workers deliver
  out of order.

Where live and batch can differ: the report assigns a flicker between two episodes to
the longer of them, which is known only once the second one is over; live assigns it
when the first one ends (its ``ended_at`` may differ from the report's by that flicker).
Labels arriving after a later label of their track (out of order, from parallel
workers) are counted as late and left out of the episodes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from fer_pipeline.analytics.episodes import find_episodes
from fer_pipeline.analytics.options import STATES, UNKNOWN, ReportOptions
from fer_pipeline.analytics.smoothing import smoothed_states
from fer_pipeline.labels import EMOTIONS
from fer_pipeline.messages import Label

K = len(EMOTIONS)
TrackKey = tuple[str, str, int]  # (camera_id, run_id, track_id)


@dataclass(frozen=True)
class EpisodeEvent:
    """An episode's ``start`` or ``end``: what the sinks publish (``payloads.episode_json``)."""

    type: str  # "start" | "end"
    episode_id: str  # the same in an episode's start and end: "<camera>/<run>/<track>/<onset ms>"
    camera_id: str
    run_id: str
    track_id: int
    emotion: str
    started_at: float
    ended_at: float | None  # None on start
    duration_s: float  # on start: how long it has held so far
    labels: int
    peak_confidence: float
    mean_confidence: float
    # End only: "released" (another state held release_s), "track_lost", "stopped" (the sink
    # stopped), or "retracted": later labels re-attributed its runs, and the report will not
    # list it (receivers that keep only reported episodes drop it).
    reason: str | None = None

    @property
    def id(self) -> str:
        """Unique per event and the same when it is sent again: receivers dedupe on it."""
        return f"{self.episode_id}/{self.type}"


@dataclass
class _Runs:
    """One track's runs of one state since its last finished episode, as ``chunk_runs`` makes them."""

    state: list[int] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    valid: list[int] = field(default_factory=list)
    prob_sum: list[np.ndarray] = field(default_factory=list)
    prob_max: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self.state)
        return {"track": np.zeros(n, dtype=np.int64), "state": np.array(self.state, dtype=np.int64),
                "start": np.array(self.start), "end": np.array(self.end), "seconds": np.array(self.seconds),
                "labels": np.array(self.labels, dtype=np.int64), "valid": np.array(self.valid, dtype=np.int64),
                "prob_sum": np.stack(self.prob_sum, axis=1) if n else np.zeros((K, 0))}

    def drop_before(self, t: float) -> None:
        """Forget the runs that start before ``t`` (those of a finished episode)."""
        keep = next((i for i, s in enumerate(self.start) if s >= t), len(self.start))
        for name in ("state", "start", "end", "seconds", "labels", "valid", "prob_sum", "prob_max"):
            del getattr(self, name)[:keep]


@dataclass
class _Open:
    episode_id: str
    emotion: int
    onset: float


class _Track:
    def __init__(self, key: TrackKey, window: int) -> None:
        self.key = key
        self.probs: deque[np.ndarray] = deque(maxlen=window)
        self.big: deque[bool] = deque(maxlen=window)
        self.runs = _Runs()
        self.last_t: float | None = None
        self.last_frame = -1
        self.seen_at = 0.0  # wall clock of its last label
        self.open: _Open | None = None


class LiveEpisodes:
    """Per-track episode detection over labels as they arrive; see the module docstring.

    Args:
        options: the report's rules (``ReportOptions``; its selection fields are unused).
        track_timeout_s: wall-clock seconds without a label after which a track is gone.
    """

    def __init__(self, options: ReportOptions | None = None, track_timeout_s: float = 3.0) -> None:
        self.options = options or ReportOptions()
        self.track_timeout_s = track_timeout_s
        self.tracks: dict[TrackKey, _Track] = {}
        self.camera_t: dict[str, float] = {}  # newest capture time seen per camera
        self.late = 0  # labels left out: older than a label of their track already seen

    def add(self, label: Label, now: float | None = None) -> list[EpisodeEvent]:
        """Take one label; returns the events it causes (tracks it shows to be gone included)."""
        now = time.time() if now is None else now
        key = (label.camera_id, label.run_id, label.track_id)
        tr = self.tracks.get(key)
        if tr is None:
            tr = self.tracks[key] = _Track(key, self.options.smooth)
        if label.frame_index <= tr.last_frame or (tr.last_t is not None and label.captured_at < tr.last_t):
            self.late += 1  # a redelivered or overtaken label: its run time is already counted
            return []
        t = label.captured_at
        tr.seen_at, tr.last_frame = now, label.frame_index
        runs = tr.runs
        if tr.last_t is not None and runs.state:
            # The previous label stands for the time until this one, capped at max_gap (runs.py).
            dt = max(0.0, min(t - tr.last_t, self.options.max_gap_s))
            runs.seconds[-1] += dt
            runs.end[-1] = tr.last_t + dt
        tr.last_t = t
        tr.probs.append(np.asarray(label.probabilities, dtype=np.float64))
        tr.big.append(min(label.bbox.w, label.bbox.h) >= self.options.min_face)
        # The buffer holds only this track's labels: positions of at least the window keep
        # trailing_sums off its group-start fix-up (for columns not used here), and the last
        # column is the report's sum, oldest first.
        n = len(tr.probs)
        state, smoothed, valid = smoothed_states(np.stack(tr.probs, axis=1), np.array(tr.big),
                                                 np.full(n, self.options.smooth), self.options.smooth,
                                                 self.options.min_confidence, UNKNOWN)
        s, sm, v = int(state[-1]), smoothed[:, -1], bool(valid[-1])
        extends = bool(runs.state) and runs.state[-1] == s
        if extends:
            runs.end[-1] = t
            runs.labels[-1] += 1
            runs.valid[-1] += v
            runs.prob_sum[-1] = runs.prob_sum[-1] + sm
            runs.prob_max[-1] = np.maximum(runs.prob_max[-1], sm)
        else:
            runs.state.append(s)
            runs.start.append(t)
            runs.end.append(t)
            runs.seconds.append(0.0)
            runs.labels.append(1)
            runs.valid.append(int(v))
            runs.prob_sum.append(sm.copy())
            runs.prob_max.append(sm.copy())
        events = self._evaluate(tr, final=False)
        cam = label.camera_id
        if t > self.camera_t.get(cam, -np.inf):
            self.camera_t[cam] = t
            events += self._expire_by_capture(cam, t)
        return events

    def expire(self, now: float | None = None) -> list[EpisodeEvent]:
        """End the tracks without a label for ``track_timeout_s`` of wall-clock time."""
        now = time.time() if now is None else now
        gone = [k for k, tr in self.tracks.items() if now - tr.seen_at >= self.track_timeout_s]
        return [e for k in gone for e in self._close(k, "track_lost")]

    def close_all(self, reason: str = "stopped") -> list[EpisodeEvent]:
        """End every track (the sink stops): the open episodes' ``end`` events."""
        return [e for k in list(self.tracks) for e in self._close(k, reason)]

    def open_episodes(self) -> dict[TrackKey, str]:
        """The emotion of each track in an episode now."""
        return {k: STATES[tr.open.emotion] for k, tr in self.tracks.items() if tr.open is not None}

    def _expire_by_capture(self, camera: str, t: float) -> list[EpisodeEvent]:
        # A label of this camera captured long after a track's last one: the tracker has let that
        # track go (the report's runs stopped counting its time after max_gap already).
        timeout = max(self.track_timeout_s, self.options.max_gap_s)
        gone = [k for k, tr in self.tracks.items() if k[0] == camera and tr.last_t is not None
                and t - tr.last_t > timeout]
        return [e for k in gone for e in self._close(k, "track_lost")]

    def _close(self, key: TrackKey, reason: str) -> list[EpisodeEvent]:
        tr = self.tracks.pop(key)
        return self._evaluate(tr, final=True, reason=reason)

    def _evaluate(self, tr: _Track, *, final: bool, reason: str = "released") -> list[EpisodeEvent]:
        """The report's episodes over the track's open runs, turned into the events not yet sent.

        An episode followed by anything (another state that held ``release_s``: shorter runs
        are absorbed into it) is over; with ``final``, the track is, and so is every episode.
        """
        events: list[EpisodeEvent] = []
        while tr.runs.state:
            r = tr.runs.arrays()
            ep = find_episodes(r, self.options)
            if len(ep["state"]) == 0:
                if tr.open is not None:  # its runs were re-attributed under the dwell time
                    events.append(self._event(tr, "end", None, "retracted"))
                    tr.open = None
                return events
            first = {k: v[0] for k, v in ep.items()}
            over = final or len(ep["state"]) > 1 or first["offset"] < r["end"][-1]
            if tr.open is not None and tr.open.emotion != int(first["state"]):
                events.append(self._event(tr, "end", None, "retracted"))  # re-attributed to another emotion
                tr.open = None
            if tr.open is None:
                key = tr.key
                tr.open = _Open(f"{key[0]}/{key[1]}/{key[2]}/{round(float(first['onset']) * 1000)}",
                                int(first["state"]), float(first["onset"]))
                events.append(self._event(tr, "start", first, None))
            if not over:
                return events
            events.append(self._event(tr, "end", first, reason if final else "released"))
            tr.open = None
            tr.runs.drop_before(float(first["offset"]))
        return events

    def _event(self, tr: _Track, kind: str, ep: dict | None, reason: str | None) -> EpisodeEvent:
        assert tr.open is not None
        camera, run, track = tr.key
        if ep is None:  # an episode that stopped being one: its last known figures, from its runs
            onset, offset, labels, mean = tr.open.onset, tr.runs.end[-1] if tr.runs.end else tr.open.onset, 0, 0.0
        else:
            onset, offset, labels, mean = (float(ep["onset"]), float(ep["offset"]), int(ep["labels"]),
                                           float(ep["confidence"]))
        peak = max((float(m[tr.open.emotion]) for s, m in zip(tr.runs.start, tr.runs.prob_max) if onset <= s < offset),
                   default=mean)
        return EpisodeEvent(type=kind, episode_id=tr.open.episode_id, camera_id=camera, run_id=run, track_id=track,
                            emotion=STATES[tr.open.emotion], started_at=onset,
                            ended_at=offset if kind == "end" else None, duration_s=round(offset - onset, 3),
                            labels=labels, peak_confidence=round(peak, 4), mean_confidence=round(mean, 4),
                            reason=reason if kind == "end" else None)
