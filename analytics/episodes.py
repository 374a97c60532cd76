"""From runs of smoothed states to episodes, transitions and per-track / per-camera summaries.

Everything here works on the run arrays of ``runs.chunk_runs`` (a few per second of
video at most), vectorised with numpy; see ``runs`` for how labels become runs. Each
chunk of whole tracks is reduced to a ``Piece`` (per-track tallies, timelines, episodes) in
the thread that read it; ``summarise`` joins the pieces into the report's tables. All of it
is per track, so reducing chunk by chunk gives the numbers of one pass over every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_pipeline.analytics.options import STATES, UNKNOWN, ReportOptions
from fer_pipeline.analytics.runs import collect_runs
from fer_pipeline.analytics.scope import RunScope, choose_runs
from fer_pipeline.emotion_log.reader import LogSource

S = len(STATES)


@dataclass
class Report:
    """The result of ``build_report``: plain rows, ready for tables and export.

    ``timelines`` holds each track's runs (start, end, state) for plotting.
    """

    options: ReportOptions
    labels_read: int
    scope: RunScope | None = None  # the runs covered (None: not resolved, as with a bare summarise)
    tracks: list[dict] = field(default_factory=list)
    cameras: list[dict] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)
    transitions: list[dict] = field(default_factory=list)
    timelines: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)


MAX_ROUNDS = 64


def _merge_same(track: np.ndarray, state: np.ndarray, seconds: np.ndarray, first: np.ndarray) -> tuple:
    """Adjacent runs of one track in one state become one run (seconds summed; ``first``:
    the index of each run's first original run)."""
    n = len(state)
    new = np.ones(n, dtype=bool)
    new[1:] = (track[1:] != track[:-1]) | (state[1:] != state[:-1])
    if new.all():
        return track, state, seconds, first
    at = np.flatnonzero(new)
    return track[at], state[at], np.add.reduceat(seconds, at), first[at]


def absorb_short(r: dict[str, np.ndarray], shorter_than: float) -> dict[str, np.ndarray]:
    """Runs shorter than ``shorter_than`` seconds taken over by a neighbour, shortest first.

    Each round relabels every short run that is a local minimum of duration within its
    track to the state of its longer neighbour, then merges equal neighbours; a flicker
    inside an episode thus disappears into it, whatever its state (``unknown`` included).
    Runs alone in their track stay as they are.
    """
    # Only track, state and seconds decide; the other columns are summed once at the end over
    # the original runs that each merged run covers (runs only ever merge with neighbours).
    track, state, sec, first = _merge_same(r["track"], r["state"], r["seconds"], np.arange(len(r["state"])))
    for round_no in range(MAX_ROUNDS + 1):
        n = len(state)
        has_left = np.zeros(n, dtype=bool)
        has_right = np.zeros(n, dtype=bool)
        has_left[1:] = track[1:] == track[:-1]
        has_right[:-1] = track[:-1] == track[1:]
        left = np.where(has_left, np.roll(sec, 1), np.inf)
        right = np.where(has_right, np.roll(sec, -1), np.inf)
        short = (sec < shorter_than) & (has_left | has_right)
        if round_no < MAX_ROUNDS:
            # Ties go to the left-most run, so two equal flickers side by side are not both relabelled at once.
            short &= (sec <= left) & (sec < right)
        if not short.any():
            break
        take_left = has_left & (~has_right | (left >= right))
        new_state = state.copy()
        idx = np.flatnonzero(short)
        new_state[idx] = np.where(take_left[idx], state[idx - 1], state[np.minimum(idx + 1, n - 1)])
        if round_no == MAX_ROUNDS:
            # Pathological staircase of durations: settle the rest at once, left to right.
            for i in idx.tolist():
                new_state[i] = new_state[i - 1] if has_left[i] else new_state[i + 1]
        track, state, sec, first = _merge_same(track, new_state, sec, first)
    if len(first) == 0:
        return {**r}
    return {"track": track, "state": state, "seconds": sec, "start": r["start"][first],
            "end": np.maximum.reduceat(r["end"], first), "labels": np.add.reduceat(r["labels"], first),
            "valid": np.add.reduceat(r["valid"], first), "prob_sum": np.add.reduceat(r["prob_sum"], first, axis=1)}


def find_episodes(r: dict[str, np.ndarray], options: ReportOptions) -> dict[str, np.ndarray]:
    """Sustained emotions per track from runs (hysteresis in time, see ``runs``).

    Runs shorter than ``release_s`` are absorbed by their neighbours; what is left and holds
    a known emotion for ``min_dwell_s`` is an episode. Returns arrays per episode: track,
    state, onset, offset, labels, confidence (the mean smoothed probability of the episode's
    emotion over its labels, flickers included).
    """
    if len(r["state"]) == 0:
        return {k: np.zeros(0, dtype=t) for k, t in (("track", np.int64), ("state", np.int64), ("onset", float),
                                                       ("offset", float), ("labels", np.int64),
                                                       ("confidence", float))}
    m = absorb_short(r, options.release)
    keep = np.flatnonzero((m["state"] != UNKNOWN) & (m["seconds"] >= options.min_dwell_s))
    state = m["state"][keep]
    conf = m["prob_sum"][state, keep] / np.maximum(m["valid"][keep], 1)
    return {"track": m["track"][keep], "state": state, "onset": m["start"][keep], "offset": m["end"][keep],
            "labels": m["labels"][keep], "confidence": conf}


@dataclass
class Piece:
    """A chunk of whole tracks reduced: what the report needs of them."""

    keys: list[tuple[str, str, int]]  # (camera, run, track) per track index
    counts: np.ndarray  # (tracks, S) labels per state
    secs: np.ndarray  # (tracks, S) seconds per state
    first_at: np.ndarray
    last_at: np.ndarray
    episodes: dict[str, np.ndarray]  # see find_episodes; track is an index into keys
    timelines: list[np.ndarray]  # per track: its runs as (start, end, state) rows


def reduce_runs(keys: list[tuple[str, str, int]], r: dict[str, np.ndarray], options: ReportOptions) -> Piece:
    """One chunk's runs (``runs.chunk_runs``: sorted by track) reduced to a ``Piece``."""
    nt = len(keys)
    idx = r["track"] * S + r["state"]
    counts = np.bincount(idx, weights=r["labels"], minlength=nt * S).reshape(nt, S).astype(np.int64)
    secs = np.bincount(idx, weights=r["seconds"], minlength=nt * S).reshape(nt, S)
    bounds = np.flatnonzero(np.r_[True, r["track"][1:] != r["track"][:-1]])
    timelines = np.split(np.column_stack((r["start"], r["end"], r["state"].astype(float))), bounds[1:])
    return Piece(keys=keys, counts=counts, secs=secs, first_at=np.minimum.reduceat(r["start"], bounds),
                 last_at=np.maximum.reduceat(r["end"], bounds), episodes=find_episodes(r, options),
                 timelines=timelines)


def _shares(seconds: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per row: each state's share (the distribution columns) and the dominant emotion, from
    the same numbers so that they agree.

    Shares are of time, ``unknown`` included, so a row's shares sum to 1; a row without any
    time (one label, or labels all at one instant) is shared by label counts instead. The
    dominant is the emotion with the largest share (ties: more labels, then the later
    emotion); ``unknown`` is dominant only when no emotion has any share, and its share is
    then 100%. So the dominant's share is always its own column's, and the largest of the
    emotions' columns.
    """
    total = seconds.sum(axis=1)
    basis = np.where((total > 0)[:, None], seconds, counts.astype(float))
    denominator = basis.sum(axis=1)
    share = np.divide(basis, denominator[:, None], out=np.zeros_like(basis), where=(denominator > 0)[:, None])
    share = share.round(4)  # the precision the rows keep: the dominant is decided on the numbers shown
    rows = np.arange(len(share))
    best = np.zeros(len(share), dtype=np.int64)
    for k in range(1, UNKNOWN):
        b_share, b_n = share[rows, best], counts[rows, best]
        best = np.where((share[:, k] > b_share) | ((share[:, k] == b_share) & (counts[:, k] >= b_n)), k, best)
    best = np.where(share[rows, best] > 0, best, UNKNOWN)
    return share, [STATES[b] for b in best.tolist()]


def _share_fields(share: np.ndarray, dominant: str) -> dict:
    """The row's ``dominant``, ``dominant_share`` and ``share_<state>`` columns (the dominant's
    share is exactly its column)."""
    cols = {f"share_{s}": float(x) for s, x in zip(STATES, share.tolist())}
    return {"dominant": dominant, "dominant_share": cols[f"share_{dominant}"], **cols}


def summarise(pieces: list[Piece], options: ReportOptions, labels_read: int) -> Report:
    """Per-track and per-camera tables, episodes and transitions from the chunks' pieces."""
    report = Report(options=options, labels_read=labels_read)
    keys = [k for p in pieces for k in p.keys]
    nt = len(keys)
    if nt == 0:
        return report
    counts = np.concatenate([p.counts for p in pieces])
    secs = np.concatenate([p.secs for p in pieces])
    first_at = np.concatenate([p.first_at for p in pieces])
    last_at = np.concatenate([p.last_at for p in pieces])
    offsets = np.cumsum([0] + [len(p.keys) for p in pieces[:-1]])
    ep = {name: np.concatenate([p.episodes[name] + (off if name == "track" else 0)
                                for p, off in zip(pieces, offsets.tolist())]) for name in pieces[0].episodes}
    ne = len(ep["state"])
    ep_per_track = np.bincount(ep["track"], minlength=nt)
    # Transitions: consecutive episodes of the same track, of different emotions. Two episodes of
    # one emotion in a row (split by unknown, a gap, or another state that held long enough to
    # end the first but too briefly to be an episode) stay two episodes, but no emotion changed.
    same = ((ep["track"][1:] == ep["track"][:-1]) & (ep["state"][1:] != ep["state"][:-1]) if ne > 1
            else np.zeros(0, dtype=bool))
    tr_from, tr_to, tr_track = ep["state"][:-1][same], ep["state"][1:][same], ep["track"][1:][same]
    tr_per_track = np.bincount(tr_track, minlength=nt)

    n_names = [f"n_{s}" for s in STATES]
    s_names = [f"s_{s}" for s in STATES]
    shares, dominant = _shares(secs, counts)
    for (camera, run, track), labels, first, last, seconds, dom, sh, n_ep, n_tr, cs, ss in zip(
            keys, counts.sum(axis=1).tolist(), first_at.tolist(), last_at.tolist(), secs.sum(axis=1).tolist(),
            dominant, shares, ep_per_track.tolist(), tr_per_track.tolist(), counts.tolist(), secs.tolist()):
        row = {"camera_id": camera, "run_id": run, "track_id": track, "labels": labels, "first_at": first,
               "last_at": last, "seconds": seconds, **_share_fields(sh, dom), "episodes": n_ep, "transitions": n_tr}
        row.update(zip(n_names, cs))
        row.update(zip(s_names, [round(x, 3) for x in ss]))
        report.tracks.append(row)

    cam_names = sorted({k[0] for k in keys})
    cam_index = {c: i for i, c in enumerate(cam_names)}
    cam_of_track = np.array([cam_index[k[0]] for k in keys], dtype=np.int64)
    for c, camera in enumerate(cam_names):
        mask = cam_of_track == c
        cc, cs = counts[mask].sum(axis=0), secs[mask].sum(axis=0)
        (share,), (dom,) = _shares(cs[None, :], cc[None, :])
        row = {"camera_id": camera, "tracks": int(mask.sum()), "labels": int(cc.sum()), "seconds": float(cs.sum()),
               **_share_fields(share, dom), "episodes": int(ep_per_track[mask].sum()), "transitions": int(tr_per_track[mask].sum())}
        row.update({f"n_{s}": int(cc[k]) for k, s in enumerate(STATES)})
        row.update({f"s_{s}": round(float(cs[k]), 3) for k, s in enumerate(STATES)})
        report.cameras.append(row)

    for j, state, onset, offset, labels, conf in zip(ep["track"].tolist(), ep["state"].tolist(),
                                                     ep["onset"].tolist(), ep["offset"].tolist(),
                                                     ep["labels"].tolist(), ep["confidence"].tolist()):
        camera, run, track = keys[j]
        report.episodes.append({"camera_id": camera, "run_id": run, "track_id": track, "emotion": STATES[state],
                                "onset": onset, "offset": offset, "duration_s": round(offset - onset, 3),
                                "labels": labels, "mean_confidence": round(conf, 4)})

    if len(tr_from):
        tr_cam = cam_of_track[tr_track]
        flat = (tr_cam * S + tr_from) * S + tr_to
        uniq, n = np.unique(flat, return_counts=True)
        for u, c in zip(uniq.tolist(), n.tolist()):
            cam, rest = divmod(u, S * S)
            a, b = divmod(rest, S)
            report.transitions.append({"camera_id": cam_names[cam], "from": STATES[a], "to": STATES[b], "count": c})
        report.transitions.sort(key=lambda t: (t["camera_id"], -t["count"], t["from"], t["to"]))

    report.timelines = dict(zip(keys, (t for p in pieces for t in p.timelines)))
    return report


def build_report(source: Path | str | LogSource, options: ReportOptions) -> Report:
    """Read the selected labels of the runs ``options.run`` names (``scope``) from ``source`` (a
    SQLite path, which is read in parallel parts, or an open ``LogSource`` such as a PostgreSQL
    ``ConnectionLog``) and summarise them."""
    options, scope = choose_runs(source, options)
    if scope.nothing:
        return Report(options=options, labels_read=0, scope=scope)
    pieces, n = collect_runs(source, options, lambda keys, runs: reduce_runs(keys, runs, options))
    report = summarise(pieces, options, n)
    report.scope = scope
    return report
