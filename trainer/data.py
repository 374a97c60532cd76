"""FER2013 in the forms users have it: npz, the Kaggle csv, or class folders; FER+ votes.

Every loader returns a ``FaceSet``: uint8 images (N, 48, 48) and integer labels in model
output order (``fer_pipeline.labels.EMOTIONS``), plus optional soft targets (N, 7).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_pipeline.errors import DataError
from fer_pipeline.labels import (
    EMOTIONS,
    FER2013_CODE_TO_INDEX,
    FERPLUS_COLUMNS,
    FERPLUS_TO_NAME,
    FOLDER_ALIASES,
    INDEX,
    NUM_CLASSES,
)

SIZE = 48
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm"}
FER2013_TRAIN_ROWS = 28_709


# The source checkout this module sits in (trainer/ is one of its top-level folders); the
# shared data lives beside it. An installed wheel has no such place: set FER_DATA_DIR.
_CHECKOUT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``FER_DATA_DIR`` if set, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("FER_DATA_DIR", _CHECKOUT.parent / "shared" / "data"))


@dataclass
class FaceSet:
    """A labelled face set: (N, 48, 48) uint8 images, labels in model output order and, from FER+,
    optional soft targets and not-face flags."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) int64, model output order
    source: str
    soft: np.ndarray | None = None  # (N, 7) float32 distributions, rows sum to 1 or 0 (no votes)
    not_face: np.ndarray | None = field(default=None)  # (N,) bool, from FER+ NF votes

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.shape[1:] != (SIZE, SIZE) or self.images.dtype != np.uint8:
            msg = f"{self.source}: images must be (N, 48, 48) uint8, got {self.images.shape} {self.images.dtype}"
            raise DataError(msg)
        if self.labels.shape != (len(self.images),):
            msg = f"{self.source}: {len(self.labels)} labels for {len(self.images)} images"
            raise DataError(msg)
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= NUM_CLASSES):
            msg = f"{self.source}: labels outside 0..{NUM_CLASSES - 1}"
            raise DataError(msg)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> FaceSet:
        return FaceSet(
            self.images[idx], self.labels[idx], self.source,
            None if self.soft is None else self.soft[idx],
            None if self.not_face is None else self.not_face[idx],
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=NUM_CLASSES)


def load_npz(path: Path) -> FaceSet:
    """The npz form: ``images`` (N,48,48) uint8, ``labels`` FER2013 codes, ``names`` in code order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            images, codes = z["images"], z["labels"].astype(np.int64)
            names = [str(n) for n in z["names"]] if "names" in z.files else None
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not a FER npz file ({e})") from e
    if names is not None:
        unknown = [n for n in names if n not in INDEX]
        if unknown:
            raise DataError(f"{path}: unknown class names {unknown}")
        mapping = np.array([INDEX[n] for n in names])
    else:
        mapping = np.array(FER2013_CODE_TO_INDEX)
    if len(codes) and (codes.min() < 0 or codes.max() >= len(mapping)):
        raise DataError(f"{path}: label codes outside 0..{len(mapping) - 1}")
    return FaceSet(images, mapping[codes], str(path))


def load_csv(path: Path, usage: str | list[str] | None = None) -> FaceSet:
    """The Kaggle ``fer2013.csv`` (columns emotion, pixels, Usage); ``usage`` filters rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    wanted = {usage} if isinstance(usage, str) else set(usage or [])
    images, labels = [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing csv columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            if wanted and row.get("Usage") not in wanted:
                continue
            pixels = np.array(row["pixels"].split(), dtype=np.int64)
            if pixels.size != SIZE * SIZE or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
                raise DataError(f"{path}:{line}: expected 2304 pixel values 0..255, got {pixels.size}")
            code = int(row["emotion"])
            if not 0 <= code < NUM_CLASSES:
                raise DataError(f"{path}:{line}: unknown emotion code {code}")
            images.append(pixels.astype(np.uint8).reshape(SIZE, SIZE))
            labels.append(FER2013_CODE_TO_INDEX[code])
    if not images:
        raise DataError(f"{path}: no rows{' with Usage ' + '/'.join(sorted(wanted)) if wanted else ''}")
    return FaceSet(np.stack(images), np.array(labels, dtype=np.int64), str(path))


def load_folder(root: Path) -> FaceSet:
    """The tutorial's layout: ``root/<class>/*.jpg`` with 48x48 grayscale images."""
    import cv2

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    images, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        name = FOLDER_ALIASES.get(sub.name.lower())
        if name is None:
            raise DataError(f"{root}: unknown class folder {sub.name!r} (expected one of {', '.join(EMOTIONS)})")
        for file in sorted(sub.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DataError(f"{file}: cannot decode image")
            if img.shape != (SIZE, SIZE):
                raise DataError(f"{file}: expected a 48x48 image, got {img.shape[1]}x{img.shape[0]}")
            images.append(img)
            labels.append(INDEX[name])
    if not images:
        raise DataError(f"{root}: no images in class folders")
    return FaceSet(np.stack(images), np.array(labels, dtype=np.int64), str(root))


def load(spec: str | Path, usage: str | None = None) -> FaceSet:
    """Load by form: ``.npz`` file, ``.csv`` file (``usage`` picks rows) or a class-folder tree."""
    path = Path(spec)
    if path.is_dir():
        return load_folder(path)
    if path.suffix == ".npz":
        return load_npz(path)
    if path.suffix == ".csv":
        return load_csv(path, usage)
    if not path.exists():
        raise DataError(f"data not found: {path}")
    raise DataError(f"{path}: unsupported data form (use .npz, fer2013.csv or a folder of class folders)")


def load_ferplus(path: Path, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """FER+ votes for csv data rows [start, start+count): (soft targets (count, 7), not-a-face mask).

    Votes for contempt/unknown are dropped; a row with no votes left gets an all-zero
    target (callers fall back to the hard label).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FER+ file not found: {path}")
    cols = [INDEX[FERPLUS_TO_NAME[c]] for c in FERPLUS_COLUMNS[:7]]
    soft = np.zeros((count, NUM_CLASSES), dtype=np.float32)
    nf = np.zeros(count, dtype=bool)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header[-10:] != list(FERPLUS_COLUMNS):
            raise DataError(f"{path}: unexpected FER+ columns {header}")
        seen = 0
        for j, row in enumerate(reader):
            if j < start:
                continue
            if j >= start + count:
                break
            votes = np.array(row[-10:], dtype=np.float32)
            soft[j - start, cols] = votes[:7]
            nf[j - start] = votes[9] > votes[:9].sum()
            seen += 1
    if seen != count:
        raise DataError(f"{path}: expected {count} rows from {start}, found {seen}")
    total = soft.sum(axis=1, keepdims=True)
    np.divide(soft, total, out=soft, where=total > 0)
    return soft, nf


def shared_split(name: str, data_dir: Path | None = None, *, ferplus: bool = False) -> FaceSet:
    """``train`` or ``publictest`` from the shared npz files, optionally with FER+ targets."""
    data_dir = Path(data_dir or default_data_dir())
    files = {"train": "fer2013_train.npz", "publictest": "fer2013_publictest.npz"}
    if name not in files:
        raise DataError(f"unknown split {name!r} (train or publictest)")
    fs = load_npz(data_dir / files[name])
    if ferplus:
        start = 0 if name == "train" else FER2013_TRAIN_ROWS
        fs.soft, fs.not_face = load_ferplus(data_dir / "ferplus_train_publictest.csv", start, len(fs))
    return fs


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with ``fraction`` of every class in val; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    val = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        val.append(idx[: int(round(len(idx) * fraction))])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx
