"""Emotion-log analytics: smoothed per-track states, sustained episodes, per-track and
per-camera summaries. Pure numpy over columns; nothing loops over rows in Python.

How a label becomes a state (one pass per track, in capture order):

1. **Unknown first**: a face smaller than ``min_face`` pixels is ``unknown``, never a guess,
   and its probabilities are left out of its neighbours' smoothing too.
2. **Smoothing**: the probabilities are averaged over a trailing window of ``smooth`` labels
   of the same track; the state is the argmax of that average, or ``unknown`` when the
   average's top probability is under ``min_confidence``. A one-frame flicker moves the
   average by 1/smooth and rarely changes the state.
3. **Runs**: consecutive labels in the same state. A label stands for the time until the
   next label of its track, capped at ``max_gap_s`` (a person out of view is not counted).
4. **Episodes** (hysteresis in time): an emotion must hold for ``min_dwell_s`` to start an
   episode, and an episode ends only when another state (``unknown`` included) holds for
   ``release_s``; anything shorter is absorbed into the episode around it. Transitions are
   counted between consecutive episodes of a track of different emotions, so flickers never
   count as transitions, and neither does one emotion interrupted (by unknown, a gap, or a
   state too short to be an episode): that is two episodes, never ``happy -> happy``.
5. **Summaries**: a track's (or camera's) distribution columns are its shares of time in each
   state, ``unknown`` included; its dominant is the emotion with the largest of those shares,
   shown with that very share (``unknown`` only when no emotion has any).

Reading (``emotion_log.reader``: the label blocks, or the rows of a log without them) gives labels in
column batches ordered by camera and track, and each batch's whole tracks are processed as it
arrives (a track that goes on waits for the next batch), so memory stays bounded whatever the
log's size; a SQLite log is read in parts (a camera, or a range of its track ids) by several
threads.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fer_pipeline.analytics.options import UNKNOWN, ReportOptions
from fer_pipeline.analytics.smoothing import smoothed_states
from fer_pipeline.emotion_log.reader import (
    Chunk,
    LogSource,
    Part,
    SqliteLog,
    camera_ids,
    continuing_rows,
    merge_chunks,
    plan_parts,
    split_whole_tracks,
)


def _grouped(chunk: Chunk) -> tuple[Chunk, np.ndarray]:
    """The chunk in (camera, track, run, time) order and where each (camera, run, track)
    group begins. Rows come ordered by (camera, track, time); producer runs restart track
    ids, so a (camera, track) block may hold several runs: those are split apart, each run
    in order of its first label, keeping time order inside it."""
    n = len(chunk)
    new_ct = np.ones(n, dtype=bool)
    new_ct[1:] = (chunk.camera[1:] != chunk.camera[:-1]) | (chunk.track[1:] != chunk.track[:-1])
    run_changes = chunk.run[1:] != chunk.run[:-1]
    if not (run_changes & ~new_ct[1:]).any():  # one run per (camera, track): the usual case
        return chunk, new_ct
    key = (np.cumsum(new_ct) - 1) * len(chunk.runs) + chunk.run
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(first[inverse], kind="stable")
    chunk = Chunk(camera=chunk.camera[order], cameras=chunk.cameras, run=chunk.run[order], runs=chunk.runs,
                  track=chunk.track[order], t=chunk.t[order], size=chunk.size[order], probs=chunk.probs[:, order])
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = key[order][1:] != key[order][:-1]
    return chunk, new_group


def smooth_states(chunk: Chunk, options: ReportOptions) -> tuple:
    """Per label: (group index, state, seconds it stands for, smoothed probabilities (K, n),
    valid (a smoothed probability exists), capture time), and the (camera, run, track) key of
    each group, numbered in order.

    The returned arrays follow ``_grouped``'s order: (camera, track, run, time).
    """
    chunk, new_group = _grouped(chunk)
    n = len(chunk)
    group = np.cumsum(new_group) - 1
    heads = np.flatnonzero(new_group)
    pos = np.arange(n) - heads[group]  # position of each label within its track
    big = chunk.size >= options.min_face
    state, smoothed, valid = smoothed_states(chunk.probs, big, pos, options.smooth, options.min_confidence, UNKNOWN)
    t = chunk.t
    dt = np.zeros(n)
    dt[:-1] = np.where(new_group[1:], 0.0, np.minimum(t[1:] - t[:-1], options.max_gap_s))
    dt = np.maximum(dt, 0.0)
    keys = [(chunk.cameras[c], chunk.runs[r], int(k)) for c, r, k in
            zip(chunk.camera[heads].tolist(), chunk.run[heads].tolist(), chunk.track[heads].tolist())]
    return group, state, dt, smoothed, valid, t, keys


def chunk_runs(chunk: Chunk, options: ReportOptions) -> tuple[list[tuple[str, str, int]], dict[str, np.ndarray]]:
    """Runs of one state in a chunk of whole tracks: the (camera, run, track) key of each
    track, and per run: ``track`` (index into the keys), ``state``, ``start`` (its first
    label's time), ``end`` (its last label's time + the time that label stands for),
    ``seconds`` (time its labels stand for), ``labels``, ``valid`` (labels with a smoothed
    probability) and ``prob_sum`` ((K, runs) summed smoothed probabilities)."""
    group, state, dt, smoothed, valid, t, keys = smooth_states(chunk, options)
    n = len(state)
    boundary = np.ones(n, dtype=bool)
    boundary[1:] = (state[1:] != state[:-1]) | (group[1:] != group[:-1])
    starts = np.flatnonzero(boundary)
    ends = np.append(starts[1:], n) - 1
    return keys, {"track": group[starts], "state": state[starts], "start": t[starts], "end": t[ends] + dt[ends],
                  "seconds": np.add.reduceat(dt, starts), "labels": ends - starts + 1,
                  "valid": np.add.reduceat(valid.astype(np.int64), starts),
                  "prob_sum": np.add.reduceat(smoothed, starts, axis=1)}


def sqlite_parts(path, options: ReportOptions) -> tuple[list[Part], int, bool]:
    """The parts of a SQLite log to read, in report order, how many threads read them, and
    whether label blocks cover the log (checked once, so every thread reads the same way)."""
    threads = options.threads or min(4, os.cpu_count() or 1)
    with SqliteLog(path) as log:
        cams = sorted(set(options.cameras)) if options.cameras else camera_ids(path)
        # Two pieces per thread and camera: threads that finish early take the next piece.
        return plan_parts(log, options, cams, 2 * threads if threads > 1 else 1), threads, log.blocks


def collect_runs(source: Path | str | LogSource, options: ReportOptions, reduce: Callable = lambda keys, runs: (keys, runs)
                 ) -> tuple[list, int]:
    """Stream the selected labels into runs, chunk by chunk of whole tracks; returns
    ([reduce(keys, runs) of each chunk, in report order], labels read).

    ``source`` is a SQLite path, or any open ``LogSource``. A SQLite path is read in parts (a camera, or a range of its track ids) by
    ``options.threads`` threads, each with its own connection; ``reduce`` runs in those
    threads too. Reading and numpy release the GIL, and tracks never span parts. The parts'
    results are joined in part order, which is the order of one sequential read.
    """
    if not isinstance(source, (str, Path)):
        return _collect(source.batches(options), options, reduce)
    parts, threads, has_blocks = sqlite_parts(source, options)
    results: list[tuple[list, int]] = [([], 0)] * len(parts)
    taken = itertools.count()

    def work() -> None:
        with SqliteLog(source, has_blocks=has_blocks) as log:
            while (i := next(taken)) < len(parts):
                results[i] = _collect(log.read(options, parts[i]), options, reduce)

    workers = min(threads, len(parts))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(work) for _ in range(workers)]:
                f.result()
    else:
        work()
    return [piece for pieces, _ in results for piece in pieces], sum(n for _, n in results)


def _collect(batches, options: ReportOptions, reduce: Callable) -> tuple[list, int]:
    """Runs of each batch's whole tracks, reduced; a track that goes on in the next batch
    waits for its end (only its rows are joined, never whole batches)."""
    pieces: list = []
    pending: list[Chunk] = []  # the batches' pieces of one unfinished track
    total = 0
    for batch in batches:
        total += len(batch)
        if pending:
            i = continuing_rows(pending[-1], batch)
            if i == len(batch):
                pending.append(batch)
                continue
            pieces.append(reduce(*chunk_runs(merge_chunks([*pending, batch.part(0, i)]), options)))
            batch = batch.part(i, len(batch))
        whole, rest = split_whole_tracks(batch)
        if len(whole):
            pieces.append(reduce(*chunk_runs(whole, options)))
        pending = [rest]
    if pending:
        pieces.append(reduce(*chunk_runs(merge_chunks(pending), options)))
    return pieces, total
