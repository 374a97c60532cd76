"""Model commands: train, evaluate, export.

TensorFlow is imported only inside the commands that need it (`train`, `export`, and
`evaluate --runtime keras`), so `fer-pipeline --help` stays fast.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from fer_pipeline.cli._app import app, setup_logging
from fer_pipeline.errors import ConfigError
from fer_pipeline.settings import DEFAULT_MODEL_DIR

QUICK_LIMIT = 2000      # training images in a --quick run
QUICK_EPOCHS = 2
QUICK_REPORT = 1000     # report-split images scored in a --quick run

Threads = Annotated[int, typer.Option("--threads", help="TensorFlow threads (0 = all cores).", min=0)]
FerPlus = Annotated[str, typer.Option(
    "--ferplus", help="FER+ soft targets: shared (the shared votes, when the rows line up), none, or a csv PATH.")]


def _tensorflow(threads: int) -> None:
    """Pin TF's thread pools before anything imports it; a missing TF is a user error."""
    try:
        from fer_pipeline.trainer.job import configure_tf

        configure_tf(threads or os.cpu_count() or 1)
    except ImportError as e:
        raise ConfigError(f"this command needs TensorFlow ({e}): pip install 'fer-pipeline[train]'") from e


def _console():
    from rich.console import Console

    return Console(highlight=False)


class _EpochPrinter:
    """Receives the trainer's per-epoch records and stage events; prints one table row per epoch."""

    HEADER = f"{'epoch':>7} {'secs':>6} {'loss':>7} {'acc':>7} {'val_loss':>9} {'val_acc':>8}"

    def __init__(self, console, status, epochs: int) -> None:
        self.console, self.status, self.epochs = console, status, epochs
        self.header_done = False

    def __call__(self, rec: dict, improved: bool) -> None:
        if "epoch" in rec:
            if not self.header_done:
                self.console.print(f"[bold]{self.HEADER}[/]")
                self.header_done = True
            nan = float("nan")
            row = (f"{rec['epoch']:>3}/{self.epochs:<3} {rec.get('seconds', 0):>6.0f} {rec.get('loss', nan):>7.4f}"
                   f" {rec.get('acc', nan):>7.4f} {rec.get('val_loss', nan):>9.4f} {rec.get('val_acc', nan):>8.4f}")
            self.console.print(row + ("  [green]* best[/]" if improved else ""))
            self.status.update(f"training: epoch {rec['epoch'] + 1}/{self.epochs}")
        elif "early_stop" in rec:
            self.console.print(f"[yellow]early stop[/] after epoch {rec['early_stop']}: val_acc stopped improving")
        elif "time_limit" in rec:
            self.console.print(f"[yellow]time limit[/]: stopped after epoch {rec['time_limit']}")
        elif "stop_requested" in rec:
            self.console.print(f"[yellow]stopped[/] after epoch {rec['stop_requested']}: STOP file in the run dir")
        elif "stage" in rec:
            what = {"calibrate": "fitting the temperature on {images} validation images",
                    "report": "scoring {images} report images",
                    "export": "exporting .keras/.tflite/int8 to {out}"}.get(rec["stage"], rec["stage"])
            self.status.update(what.format(**rec))


def _summary(console, result: dict, out_dir: Path, title: str) -> None:
    from rich.table import Table

    meta, test = result["meta"], result["test"]
    m = meta.get("metrics", {})
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", f"{meta['model_id']} ({meta['architecture']}, {meta['macs_per_face'] / 1e6:.1f} M MAC/face, "
                       f"{meta['parameters']:,} parameters)")
    t.add_row("report split", f"{m.get('publictest_source', '?')} ({test['n']} images)")
    t.add_row("accuracy", f"{test['accuracy']:.2%}  (flip TTA {m.get('publictest_flip_tta_accuracy', 0):.2%})")
    t.add_row("macro-F1", f"{test['macro_f1']:.4f}")
    t.add_row("ECE", f"{test['ece']:.4f}  (after temperature scaling)")
    t.add_row("temperature", f"{meta['temperature']:.3f}  (fitted on {result['val']['n']} validation images)")
    t.add_row("validation accuracy", f"{result['val']['accuracy']:.2%}")
    check = meta.get("export_check", {})
    if "int8_dropped" in check:
        t.add_row("int8", f"not shipped: {check['int8_dropped']}")
    elif "accuracy_tflite_int8" in check:
        t.add_row("int8", f"accuracy {check['accuracy_tflite_int8']:.2%}")
    files = [*sorted(set(meta["files"].values())), "model.json"]
    t.add_row("written to", str(out_dir))
    t.add_row("files", "\n".join(f"{f}  ({(out_dir / f).stat().st_size / 1e6:.1f} MB)" for f in files))
    console.print(t)


@app.command()
def train(
    arch: Annotated[str, typer.Option(help="compact (ours, default) or seed (the tutorial's CNN).")] = "compact",
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs.",
                                                  show_default="recipe's, 2 with --quick")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Batch size.",
                                                      show_default="128")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.",
                                                show_default="recipe's")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (split, init, augmentation).",
                                                show_default="recipe's")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help=f"A few minutes: {QUICK_LIMIT} images, {QUICK_EPOCHS} epochs, {QUICK_REPORT} report images.",
    )] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run dir's last checkpoint.")] = False,
    run_dir: Annotated[Path | None, typer.Option(help="Checkpoints and state.",
                                                    show_default="runs/<arch>")] = None,
    out: Annotated[Path | None, typer.Option(help="Export dir; "
                                                     "--out models ships it to the workers.",
                                                show_default="<run-dir>/export")] = None,
    data: Annotated[str | None, typer.Option(help="Training data: .npz, fer2013.csv (Usage=Training rows) "
                                                     "or a folder of class folders.",
                                                show_default="shared npz")] = None,
    test_data: Annotated[str | None, typer.Option(help="Report split, same forms.",
                                                     show_default="shared PublicTest")] = None,
    ferplus: FerPlus = "shared",
    threads: Threads = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Train on at most N images.",
                                                 show_default="all")] = None,
    patience: Annotated[int | None, typer.Option(min=1, help="Early stop after N epochs without a better "
                                                    "validation accuracy.",
                                                    show_default="recipe's")] = None,
    time_limit: Annotated[float | None, typer.Option(
        min=0.1, help="Stop after the last epoch that fits in this many minutes (keeps the best checkpoint).",
        show_default="no limit")] = None,
) -> None:
    """Train a model, calibrate it, report PublicTest metrics and export the shipped files.

    Runs on the Keras backend in KERAS_BACKEND: TensorFlow by default; jax or torch use a GPU
    where one is (export then happens where TensorFlow is: `fer-pipeline export`).
    """
    from fer_pipeline.trainer.architectures import ARCHS

    if arch not in ARCHS:
        raise ConfigError(f"unknown --arch {arch!r} (choose from {', '.join(ARCHS)})")
    setup_logging("WARNING")
    _tensorflow(threads)
    from fer_pipeline.trainer import job
    from fer_pipeline.trainer.train import Recipe

    overrides = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, limit=limit,
                                       patience=patience).items() if v is not None}
    deadline = time.time() + time_limit * 60 if time_limit else None
    if quick:
        overrides.setdefault("epochs", QUICK_EPOCHS)
        overrides.setdefault("limit", QUICK_LIMIT)
        overrides["jit"] = False  # XLA compiling costs more than it saves in a two-epoch run
    data_spec = str(Path(data).resolve()) if data else None
    ferplus_spec = ferplus if ferplus in ("shared", "none") else str(Path(ferplus).resolve())
    # The data named in the recipe lands in state.json: `export` recreates the validation
    # split from it, and `--resume` refuses to continue on different data.
    recipe = Recipe.for_arch(arch, quick=quick, notes={"data": data_spec, "ferplus": ferplus_spec}, **overrides)
    run_dir = run_dir or Path("runs") / arch
    out = out or run_dir / "export"

    console = _console()
    console.print(f"[bold]training[/] {arch}: {recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr:g}"
                  f"{f', at most {recipe.limit} images' if recipe.limit else ''}"
                  f"{f', at most {time_limit:g} min' if time_limit else ''} on Keras/{job.keras_backend()}; "
                  f"checkpoints in {run_dir}")
    state = run_dir / "state.json"
    if resume and state.is_file():
        console.print(f"resuming after epoch {json.loads(state.read_text()).get('epoch', 0)}")
    with console.status("loading data") as status:
        printer = _EpochPrinter(console, status, recipe.epochs)
        try:
            result = job.run(train_data=data_spec, test_data=test_data, ferplus=ferplus_spec, recipe=recipe,
                             run_dir=run_dir, out_dir=out, resume=resume, printer=printer,
                             report_limit=QUICK_REPORT if quick else 0, deadline=deadline)
        except KeyboardInterrupt:
            status.stop()
            _interrupted(console, run_dir)
            raise typer.Exit(130) from None
    if result["meta"] is None:
        _scores(console, result, run_dir)
        return
    _summary(console, result, out, f"trained {arch}")
    if out.resolve() != DEFAULT_MODEL_DIR.resolve():
        console.print(f"ship it to the workers with --out {DEFAULT_MODEL_DIR} (or copy {out}/* there)")


def _scores(console, result: dict, run_dir: Path) -> None:
    """A run on a non-TensorFlow backend: scores only; export happens where TensorFlow is."""
    test = result["test"]
    console.print(f"PublicTest accuracy [bold]{test['accuracy']:.2%}[/] (flip TTA {result['tta_accuracy']:.2%}), "
                  f"macro-F1 {test['macro_f1']:.4f}, ECE {test['ece']:.4f}; validation {result['val']['accuracy']:.2%}"
                  f"; scores in {run_dir / 'report.json'}")
    console.print(f"export it with TensorFlow: fer-pipeline export --checkpoint {run_dir / 'best.keras'} --out models")


def _interrupted(console, run_dir: Path) -> None:
    state = run_dir / "state.json"
    done = json.loads(state.read_text()).get("epoch", 0) if state.is_file() else 0
    if done:
        console.print(f"[yellow]interrupted[/]: epochs 1-{done} are checkpointed in {run_dir}; "
                      "run the same command with --resume to continue")
    else:
        console.print("[yellow]interrupted[/] before the first epoch finished: nothing to resume")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="model.json or its directory.")] = DEFAULT_MODEL_DIR,
    data: Annotated[str | None, typer.Option(help="Faces: .npz, fer2013.csv or class folders.",
                                                show_default="shared PublicTest")] = None,
    usage: Annotated[str, typer.Option(help="Rows of a fer2013.csv to use.")] = "PublicTest",
    runtime: Annotated[str, typer.Option(help="litert or keras.")] = "litert",
    int8: Annotated[bool, typer.Option("--int8", help="Use the dynamic-range int8 TFLite model.")] = False,
    tta: Annotated[bool, typer.Option("--tta", help="Average with horizontally flipped faces.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON only.")] = False,
    confusion_png: Annotated[Path | None, typer.Option(help="Also draw the confusion matrix to this image.",
                                                          show_default="none")] = None,
    limit: Annotated[int, typer.Option(min=0, help="Only the first N faces (0 = all).")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="LiteRT threads.")] = 1,
) -> None:
    """Score a shipped model: accuracy, macro-F1, per-class metrics, confusion matrix, ECE."""
    if runtime not in ("litert", "keras"):
        raise ConfigError(f"unknown --runtime {runtime!r} (litert or keras)")
    if int8 and runtime != "litert":
        raise ConfigError("--int8 is a LiteRT model: use it with --runtime litert")
    if runtime == "keras":
        _tensorflow(threads)
    from fer_pipeline.trainer.evaluate import draw_confusion
    from fer_pipeline.trainer.evaluate import evaluate as run_evaluation

    report = run_evaluation(model, data, runtime=runtime, int8=int8, tta=tta, limit=limit, usage=usage,
                            threads=threads)
    if confusion_png:
        report["confusion_png"] = str(draw_confusion(report["confusion"], confusion_png))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(_console(), report)


def _print_report(console, r: dict) -> None:
    from rich.table import Table

    from fer_pipeline.labels import EMOTIONS

    m, d = r["model"], r["data"]
    temp = f", T={m['temperature']:.3f}" if isinstance(m.get("temperature"), (int, float)) else ""
    console.print(f"[bold]{m['model_id']}[/] ({m['architecture']}, {m['runtime']} {m['file']}{temp}) on "
                  f"{d['source']}: {d['images']} faces{', flip TTA' if d['tta'] else ''}")
    console.print(f"accuracy [bold]{r['accuracy']:.2%}[/]   macro-F1 [bold]{r['macro_f1']:.4f}[/]   "
                  f"ECE {r['ece']:.4f}   NLL {r['nll']:.4f}")
    per = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for name, v in r["per_class"].items():
        per.add_row(name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    console.print(per)
    cm = Table(title="confusion (rows: true, columns: predicted)", title_justify="left")
    cm.add_column("")
    for name in EMOTIONS:
        cm.add_column(name[:8], justify="right")
    for name, row in zip(EMOTIONS, r["confusion"]):
        cells = [f"[bold]{c}[/]" if j == EMOTIONS.index(name) else str(c) for j, c in enumerate(row)]
        cm.add_row(name, *cells)
    console.print(cm)
    if r.get("confusion_png"):
        console.print(f"confusion matrix image: {r['confusion_png']}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(
        help="A run's logits checkpoint (best.keras or last.keras) or its run dir; state.json must sit beside it.",
    )] = Path("runs/compact/best.keras"),
    out: Annotated[Path | None, typer.Option(help="Export dir.",
                                                show_default="<run dir>/export")] = None,
    data: Annotated[str | None, typer.Option(help="Training data the run used.",
                                                show_default="as recorded in state.json")] = None,
    test_data: Annotated[str | None, typer.Option(help="Report split.",
                                                     show_default="shared PublicTest")] = None,
    ferplus: Annotated[str | None, typer.Option(help="FER+ choice the run used.",
                                                   show_default="as recorded")] = None,
    threads: Threads = 0,
) -> None:
    """Re-export a checkpoint: refit the temperature on its validation split, write the shipped files."""
    setup_logging("WARNING")
    _tensorflow(threads)
    from fer_pipeline.trainer import job

    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    out = out or run_dir / "export"
    console = _console()
    with console.status("loading data and checkpoint") as status:
        result = job.reexport(checkpoint, out, train_data=data, test_data=test_data, ferplus=ferplus,
                              printer=_EpochPrinter(console, status, 0))
    _summary(console, result, out, f"exported {checkpoint}")
