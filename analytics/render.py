"""Showing an emotion ``Report``: rich tables, CSV/JSON/Parquet export, a PNG of timelines.

matplotlib (plots) and pyarrow (Parquet) are optional extras, imported only when asked for.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from fer_pipeline.analytics.episodes import Report
from fer_pipeline.analytics.options import STATES, UNKNOWN
from fer_pipeline.errors import ConfigError

SHORT = tuple(s[:3] for s in STATES)  # column headers that fit a terminal
TABLES = ("cameras", "tracks", "episodes", "transitions")
FORMATS = ("csv", "json", "parquet")
# One colour per state, readable on white, unknown in grey.
COLOURS = {"angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c", "neutral": "#7f7f7f",
           "sad": "#1f77b4", "surprise": "#ff7f0e", "unknown": "#d9d9d9"}


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def _share_cells(row: dict) -> list[str]:
    """The distribution columns: the row's ``share_<state>``, the very numbers its dominant comes from."""
    return [_percent(row[f"share_{s}"]) if row[f"share_{s}"] else "" for s in STATES]


def _dominant_cell(row: dict) -> str:
    return f"{row['dominant']} {_percent(row['dominant_share'])}"


DOMINANT_NOTE = ("dominant: the emotion with the most time, its share of all time (unknown included, as in the "
                 "columns); unknown only when no emotion was seen")


def render(report: Report, *, limit: int = 30, episodes: bool = False) -> list:
    """Rich tables: per camera, per track (the ``limit`` longest), transitions, and episodes if asked."""
    from rich.table import Table
    from rich.text import Text

    out: list = []  # rich renderables: a header line, then tables
    if report.scope is not None:
        out.append(Text(report.scope.describe(), style="bold"))
    out.append(Text(f"{report.labels_read:,} labels, {len(report.tracks):,} tracks, {len(report.episodes):,} episodes "
                f"(smoothing {report.options.smooth} labels, unknown below {report.options.min_confidence:.2f} "
                f"or faces under {report.options.min_face}px, min dwell {report.options.min_dwell_s:g}s)"))
    if not report.tracks:
        out.append(Text("no labels match the filters", style="yellow"))
        return out

    def table(title: str, first: list[str], caption: str | None = None) -> Table:
        t = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
        for c in first:
            t.add_column(c, justify="left" if c in ("camera", "run", "emotion", "from", "to", "dominant", "start")
                         else "right", no_wrap=c in ("start", "onset"))
        return t

    cams = table("time in each emotion per camera (smoothed)", ["camera", "tracks", "labels", "time", "dominant",
                                                                 *SHORT, "transitions"], DOMINANT_NOTE)
    for r in report.cameras:
        cams.add_row(r["camera_id"], f"{r['tracks']:,}", f"{r['labels']:,}", f"{r['seconds']:,.0f}s",
                     _dominant_cell(r), *_share_cells(r), f"{r['transitions']:,}")
    out.append(cams)

    tracks = sorted(report.tracks, key=lambda r: -r["seconds"])[:limit]
    title = "tracks" if len(report.tracks) <= limit else f"the {limit} longest of {len(report.tracks):,} tracks"
    tt = table(title, ["camera", "run", "track", "start", "time", "labels", "dominant", *SHORT, "episodes"])
    for r in tracks:
        tt.add_row(r["camera_id"], r["run_id"], str(r["track_id"]), _when(r["first_at"]), f"{r['seconds']:,.1f}s",
                   f"{r['labels']:,}", _dominant_cell(r), *_share_cells(r),
                   str(r["episodes"]))
    out.append(tt)

    if report.transitions:
        tr = table("transitions between episodes (changes of emotion)", ["camera", "from", "to", "count"])
        for r in report.transitions[:limit]:
            tr.add_row(r["camera_id"], r["from"], r["to"], f"{r['count']:,}")
        out.append(tr)
    if episodes:
        et = table("episodes", ["camera", "run", "track", "emotion", "onset", "duration", "labels", "confidence"])
        for r in report.episodes[:limit * 10]:
            et.add_row(r["camera_id"], r["run_id"], str(r["track_id"]), r["emotion"], _when(r["onset"]),
                       f"{r['duration_s']:.1f}s", f"{r['labels']:,}", f"{r['mean_confidence']:.2f}")
        out.append(et)
    return out


def export_folder(fmt: str, out: Path) -> None:
    """Check an export's format and create its folder: a ConfigError (one line) otherwise."""
    if fmt not in FORMATS:
        raise ConfigError(f"--export must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create export folder {out}: {e.strerror or e}") from e


def export(report: Report, fmt: str, out: Path) -> list[Path]:
    """Write the tables under ``out`` (a folder): ``<table>.csv`` / ``<table>.parquet`` each,
    or one ``report.json`` holding the options and every table. Returns the files written."""
    export_folder(fmt, out)
    tables = {name: getattr(report, name) for name in TABLES}
    if fmt == "json":
        path = out / "report.json"
        doc = {"labels_read": report.labels_read, "options": _options(report), "runs": _runs(report), **tables}
        path.write_text(json.dumps(doc, indent=1))
        return [path]
    written = []
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("Parquet export needs pyarrow: pip install 'fer-pipeline[report]'") from None
        for name, rows in tables.items():
            path = out / f"{name}.parquet"
            pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({}), path)
            written.append(path)
        return written
    for name, rows in tables.items():
        path = out / f"{name}.csv"
        with path.open("w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        written.append(path)
    return written


def _runs(report: Report) -> dict | None:
    scope = report.scope
    if scope is None:
        return None
    return {"run": scope.choice, "chosen": scope.chosen, "run_ids": list(scope.run_ids), "runs_in_selection":
            list(scope.runs), "description": scope.describe()}


def _options(report: Report) -> dict:
    from dataclasses import asdict

    d = asdict(report.options)
    d["release_s"] = report.options.release
    return d


def plot(report: Report, path: Path, *, max_tracks: int = 12) -> Path:
    """A PNG: per-camera share of time in each emotion (top), and the timelines of the
    ``max_tracks`` longest tracks, one coloured band per state (bottom)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'fer-pipeline[report]'") from None
    tracks = sorted(report.tracks, key=lambda r: -r["seconds"])[:max_tracks]
    n_cam = max(1, len(report.cameras))
    fig, (ax_c, ax_t) = plt.subplots(2, 1, figsize=(12, 2.2 + 0.45 * n_cam + 0.45 * max(1, len(tracks))),
                                     gridspec_kw={"height_ratios": [max(1, n_cam), max(1, len(tracks))]})
    for i, cam in enumerate(report.cameras):
        left = 0.0
        for s in STATES:
            share = cam[f"share_{s}"]
            if share > 0:
                ax_c.barh(i, share, left=left, color=COLOURS[s], edgecolor="white")
                if share > 0.06:
                    ax_c.text(left + share / 2, i, f"{s}\n{100 * share:.0f}%", ha="center", va="center", fontsize=8)
                left += share
    ax_c.set_yticks(range(len(report.cameras)), [c["camera_id"] for c in report.cameras])
    ax_c.set_xlim(0, 1)
    ax_c.invert_yaxis()
    ax_c.set_title("time in each emotion per camera (smoothed)")
    ax_c.set_xlabel("share of time")

    for i, r in enumerate(tracks):
        runs = report.timelines.get((r["camera_id"], r["run_id"], r["track_id"]))
        if runs is None:
            continue
        t0 = r["first_at"]  # each track from its own start: tracks far apart in time stay readable
        for k, s in enumerate(STATES):
            sel = runs[runs[:, 2] == k]
            if len(sel):
                ax_t.broken_barh(list(zip(sel[:, 0] - t0, sel[:, 1] - sel[:, 0])), (i - 0.4, 0.8),
                                 facecolors=COLOURS[s], alpha=0.45 if k == UNKNOWN else 1.0)
    ax_t.set_yticks(range(len(tracks)), [f"{r['camera_id']} #{r['track_id']}  {_when(r['first_at'])[5:]}"
                                         for r in tracks])
    ax_t.set_ylim(max(len(tracks), 1) - 0.5, -0.5)
    ax_t.set_xlabel("seconds since the track appeared")
    ax_t.set_title(f"emotion timelines of the {len(tracks)} longest tracks (smoothed)")
    fig.legend(handles=[Patch(color=COLOURS[s], label=s) for s in STATES], loc="lower center", ncol=len(STATES),
               frameon=False)
    if report.scope is not None:
        fig.suptitle(report.scope.describe(), fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        plt.close(fig)
    return path
