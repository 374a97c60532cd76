"""From runs of smoothed states to episodes, transitions and per-track / per-camera summaries.

Everything here works on the run arrays of ``analytics.collect_runs`` (a few per second of
video at most), vectorised with numpy; see ``analytics`` for how labels become runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fer_pipeline.consumers.analytics import STATES, UNKNOWN, ReportOptions, Runs, collect_runs
from fer_pipeline.labels import EMOTIONS

S = len(STATES)


@dataclass
class Report:
    """The result of ``build_report``: plain rows, ready for tables and export.

    ``timelines`` holds each track's runs (start, end, state) for plotting.
    """

    options: ReportOptions
    labels_read: int
    tracks: list[dict] = field(default_factory=list)
    cameras: list[dict] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)
    transitions: list[dict] = field(default_factory=list)
    timelines: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)


MAX_ROUNDS = 64


def _merge_same(r: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Adjacent runs of one track in one state become one run."""
    n = len(r["state"])
    new = np.ones(n, dtype=bool)
    new[1:] = (r["track"][1:] != r["track"][:-1]) | (r["state"][1:] != r["state"][:-1])
    if new.all():
        return r
    at = np.flatnonzero(new)
    out = {"track": r["track"][at], "state": r["state"][at], "start": r["start"][at],
           "end": np.maximum.reduceat(r["end"], at)}
    for name in ("seconds", "labels", "valid", "prob_sum"):
        out[name] = np.add.reduceat(r[name], at, axis=0)
    return out


def absorb_short(r: dict[str, np.ndarray], shorter_than: float) -> dict[str, np.ndarray]:
    """Runs shorter than ``shorter_than`` seconds taken over by a neighbour, shortest first.

    Each round relabels every short run that is a local minimum of duration within its
    track to the state of its longer neighbour, then merges equal neighbours; a flicker
    inside an episode thus disappears into it, whatever its state (``unknown`` included).
    Runs alone in their track stay as they are.
    """
    r = _merge_same(r)
    for round_no in range(MAX_ROUNDS + 1):
        n = len(r["state"])
        sec, track = r["seconds"], r["track"]
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
            return r
        take_left = has_left & (~has_right | (left >= right))
        state = r["state"].copy()
        idx = np.flatnonzero(short)
        state[idx] = np.where(take_left[idx], r["state"][idx - 1], r["state"][np.minimum(idx + 1, n - 1)])
        if round_no == MAX_ROUNDS:
            # Pathological staircase of durations: settle the rest at once, left to right.
            for i in idx.tolist():
                state[i] = state[i - 1] if has_left[i] else state[i + 1]
        r = _merge_same({**r, "state": state})
    return r


def find_episodes(r: dict[str, np.ndarray], options: ReportOptions) -> dict[str, np.ndarray]:
    """Sustained emotions per track from runs (hysteresis in time, see ``analytics``).

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
    conf = m["prob_sum"][keep, state] / np.maximum(m["valid"][keep], 1)
    return {"track": m["track"][keep], "state": state, "onset": m["start"][keep], "offset": m["end"][keep],
            "labels": m["labels"][keep], "confidence": conf}


def _dominant(seconds: np.ndarray, counts: np.ndarray) -> tuple[str, float]:
    """The emotion with most time (unknown excluded; ties: more labels); its share of known time."""
    known = seconds[:UNKNOWN]
    total = known.sum()
    if counts[:UNKNOWN].sum() == 0:
        return "unknown", 0.0
    best = int(np.lexsort((counts[:UNKNOWN], known))[-1])
    return EMOTIONS[best], float(known[best] / total) if total > 0 else float(counts[best] / counts[:UNKNOWN].sum())


def summarise(runs: Runs, options: ReportOptions, labels_read: int) -> Report:
    """Per-track and per-camera tables, episodes and transitions."""
    r = runs.concat()
    keys = runs.track_keys
    nt = len(keys)
    report = Report(options=options, labels_read=labels_read)
    idx = r["track"] * S + r["state"]
    counts = np.bincount(idx, weights=r["labels"], minlength=nt * S).reshape(nt, S).astype(np.int64)
    secs = np.bincount(idx, weights=r["seconds"], minlength=nt * S).reshape(nt, S)
    first_at = np.full(nt, np.inf)
    last_at = np.full(nt, -np.inf)
    np.minimum.at(first_at, r["track"], r["start"])
    np.maximum.at(last_at, r["track"], r["end"])

    ep = find_episodes(r, options)
    ne = len(ep["state"])
    ep_per_track = np.bincount(ep["track"], minlength=nt)
    # Transitions: consecutive episodes of the same track.
    same = ep["track"][1:] == ep["track"][:-1] if ne > 1 else np.zeros(0, dtype=bool)
    tr_from, tr_to, tr_track = ep["state"][:-1][same], ep["state"][1:][same], ep["track"][1:][same]
    tr_per_track = np.bincount(tr_track, minlength=nt)

    for i, (camera, run, track) in enumerate(keys):
        dominant, share = _dominant(secs[i], counts[i])
        row = {"camera_id": camera, "run_id": run, "track_id": track, "labels": int(counts[i].sum()),
               "first_at": float(first_at[i]), "last_at": float(last_at[i]), "seconds": float(secs[i].sum()),
               "dominant": dominant, "dominant_share": round(share, 4), "episodes": int(ep_per_track[i]),
               "transitions": int(tr_per_track[i])}
        row.update({f"n_{s}": int(counts[i, k]) for k, s in enumerate(STATES)})
        row.update({f"s_{s}": round(float(secs[i, k]), 3) for k, s in enumerate(STATES)})
        report.tracks.append(row)

    cam_names = sorted({k[0] for k in keys})
    cam_of_track = np.array([cam_names.index(k[0]) for k in keys], dtype=np.int64)
    for c, camera in enumerate(cam_names):
        mask = cam_of_track == c
        cc, cs = counts[mask].sum(axis=0), secs[mask].sum(axis=0)
        dominant, share = _dominant(cs, cc)
        row = {"camera_id": camera, "tracks": int(mask.sum()), "labels": int(cc.sum()), "seconds": float(cs.sum()),
               "dominant": dominant, "dominant_share": round(share, 4),
               "episodes": int(ep_per_track[mask].sum()), "transitions": int(tr_per_track[mask].sum())}
        row.update({f"n_{s}": int(cc[k]) for k, s in enumerate(STATES)})
        row.update({f"s_{s}": round(float(cs[k]), 3) for k, s in enumerate(STATES)})
        report.cameras.append(row)

    for j in range(ne):
        camera, run, track = keys[int(ep["track"][j])]
        onset, offset = float(ep["onset"][j]), float(ep["offset"][j])
        report.episodes.append({"camera_id": camera, "run_id": run, "track_id": track,
                                "emotion": STATES[int(ep["state"][j])], "onset": onset, "offset": offset,
                                "duration_s": round(offset - onset, 3), "labels": int(ep["labels"][j]),
                                "mean_confidence": round(float(ep["confidence"][j]), 4)})

    if len(tr_from):
        tr_cam = cam_of_track[tr_track]
        flat = (tr_cam * S + tr_from) * S + tr_to
        uniq, n = np.unique(flat, return_counts=True)
        for u, c in zip(uniq.tolist(), n.tolist()):
            cam, rest = divmod(u, S * S)
            a, b = divmod(rest, S)
            report.transitions.append({"camera_id": cam_names[cam], "from": STATES[a], "to": STATES[b], "count": c})
        report.transitions.sort(key=lambda t: (t["camera_id"], -t["count"], t["from"], t["to"]))

    bounds = np.flatnonzero(np.r_[True, r["track"][1:] != r["track"][:-1]]) if len(r["track"]) else np.zeros(0, int)
    stops = np.append(bounds[1:], len(r["track"]))
    for a, b in zip(bounds.tolist(), stops.tolist()):
        report.timelines[keys[int(r["track"][a])]] = np.column_stack(
            (r["start"][a:b], r["end"][a:b], r["state"][a:b].astype(float)))
    return report


def build_report(source, options: ReportOptions) -> Report:
    """Read the selected labels from ``source`` (SQLite path or DB-API connection) and summarise them."""
    runs, n = collect_runs(source, options)
    return summarise(runs, options, n)
