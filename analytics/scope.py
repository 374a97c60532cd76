"""Which producer runs a report covers: ``--run latest`` (the default), ``all``, or one run id.

A run is what one `fer-pipeline up` (or one producer on its own) wrote: every camera of it
shares the run id, and a producer that `up` restarted after a crash writes as ``<run>~<n>``
(``fer_pipeline.run_ids``), still the same run here. Running the demo twice thus gives two
runs, and without a choice the report would list every track twice.

**latest** is the run whose newest label (within the other filters: cameras, tracks, since,
until) was captured last, its restarts counted in; a tie goes to the greater run id. The
choice is made from one GROUP BY over the log (``reader.run_times``: over the label blocks'
small columns when they cover the log), before anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fer_pipeline.emotion_log.reader import LogSource, SqliteLog
from fer_pipeline.errors import ConfigError
from fer_pipeline.run_ids import base_run

if TYPE_CHECKING:
    from fer_pipeline.analytics.options import ReportOptions

LATEST, ALL = "latest", "all"


@dataclass(frozen=True)
class RunScope:
    """What ``--run`` resolved to.

    ``runs`` holds every run in the selection (restarts folded in), newest first; ``chosen``
    the run read (None with ``all``); ``run_ids`` the exact ids to read (empty: every one).
    """

    choice: str
    runs: tuple[str, ...]
    chosen: str | None
    run_ids: tuple[str, ...]

    @property
    def nothing(self) -> bool:
        """No run matched: nothing to read."""
        return not self.runs

    def describe(self) -> str:
        """One line for the report's header, e.g. ``run 20261203-181502-ab12 (latest of 3; --run all for every
        run)``."""
        n = len(self.runs)
        if n == 0:
            return "no run has labels in the selection"
        runs = f"{n} run{'s' if n != 1 else ''}"
        if self.chosen is None:
            return f"all {runs}" if n != 1 else f"1 run ({self.runs[0]})"
        restarts = len(self.run_ids) - (self.chosen in self.run_ids)
        name = f"run {self.chosen}" + (f" with {restarts} restart{'s' if restarts != 1 else ''}" if restarts else "")
        if n == 1:
            return f"{name} (the only run)"
        which = f"latest of {n}" if self.choice == LATEST else f"one of {runs}"
        return f"{name} ({which}; --run all for every run)"


def resolve(choice: str, times: dict[str, float]) -> RunScope:
    """``choice`` (latest, all or a run id) against ``times``: each run id in the selection and
    its newest label's capture time (``reader.run_times``)."""
    newest: dict[str, float] = {}
    for run_id, t in times.items():
        base = base_run(run_id)
        newest[base] = max(newest.get(base, t), t)
    runs = tuple(sorted(newest, key=lambda r: (newest[r], r), reverse=True))
    if choice == ALL:
        return RunScope(choice, runs, None, ())
    if choice == LATEST:
        if not runs:
            return RunScope(choice, (), None, ())
        chosen = runs[0]
        return RunScope(choice, runs, chosen, tuple(sorted(r for r in times if base_run(r) == chosen)))
    # One run: the id given and its restarts (an id with a restart mark names that restart alone).
    ids = tuple(sorted(r for r in times if r == choice or base_run(r) == choice))
    if not ids:
        listed = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        raise ConfigError(f"no run {choice!r} in the selected labels" +
                          (f"; the runs there, newest first: {listed}" if runs else " (they are empty)"))
    return RunScope(choice, runs, choice, ids)


def choose_runs(source: Path | str | LogSource, options: ReportOptions) -> tuple[ReportOptions, RunScope]:
    """``options`` narrowed to the runs ``options.run`` names, and what it resolved to (one
    GROUP BY query on ``source``: see the module docstring)."""
    if isinstance(source, (str, Path)):
        with SqliteLog(source) as log:
            times = log.run_times(options)
    else:
        times = source.run_times(options)
    scope = resolve(options.run, times)
    return replace(options, runs=scope.run_ids), scope
