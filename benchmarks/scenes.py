"""Labelled synthetic scenes for the face-detection benchmark: video frames whose faces are known exactly.

    python -m benchmarks.scenes [--seed 0] [--frames 300] [--out /tmp/scenes]

The shared videos have faces but no ground truth, so a detector can only be compared with another
detector there. Here FER2013 PublicTest crops (48x48 gray, the classifier's own framing) are
pasted into camera-like frames, each crop being one identity that enters, drifts, turns a little
and leaves. Every frame comes with each face's exact square in frame pixels (the FER framing box),
its in-plane rotation and the visible share, which is what recall/precision, the mapping from a
detector's box to the FER framing, tracking identity switches and end-to-end emotion accuracy
need. ``crop_truth`` cuts the crop an ideal detector and framing would produce.

Backgrounds are frames of the shared videos, and those show real people. A background face would
be a true face with no label: a detector finding it would be scored a false positive. So no face
may survive, by construction. Blur alone is not enough: the videos are close-ups whose faces Haar
still finds after a Gaussian of sigma 40. Each frame is therefore first rebuilt from cross-faded
patches smaller than half a face, each moved by up to 1.5 patches (the layout and the light stay,
eyes, nose and mouth lose their order), then blurred hard (sigma 12-20 px at 640x480) into a
defocused scene, with mild noise. FER crops are gray, so whole frames are gray (three equal BGR
channels) to keep faces and background alike.

Everything is drawn from one seed; motion, looks and sensor noise use separate random streams,
so switching an effect off (``jitter``, ``blur``, ``rotate``, ``noise``) leaves the trajectories
and identities unchanged.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import data_dir  # noqa: E402
from fer_pipeline.producers.tracker import iou  # noqa: E402

Box = tuple[int, int, int, int]

FER_SIDE = 48
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 code order
BACKGROUND_VIDEOS = ("woman2.mp4", "short_hamilton_clip.mp4")
MAX_ANGLE = 15.0  # degrees; FER faces are near-upright, the benchmark probes small roll only
# The pasted square keeps every pixel of the face (its crop is the dataset's image); around it a
# margin of MARGIN x side, the face's own edge mirrored and blurred, fades into the background,
# so there is no hard square edge and no head-less cut for a detector to balk at.
MARGIN = 0.25
# The benchmark tolerates IoU < 0.1 between faces; half of it here leaves rounding no chance to cross it.
MAX_IOU = 0.05
# Motion constants are in pixels per frame at 640 px width and 30 fps, scaled to the scene.
REF_WIDTH, REF_FPS = 640.0, 30.0
# The videos are close-ups: a face spans ~200 px at 640x480 and survives a blur of sigma 40 for
# Haar. Rebuilding each frame from patches smaller than half a face, taken at random places,
# breaks every face apart; the blur then makes it a defocused scene.
PATCH = 80  # px at 640 px width
REACH = 1.5  # how far, in patches, a patch may come from
BLUR_SIGMA = (12.0, 20.0)  # px at 640 px width
SIZE_EDGES = (48, 64, 96, 128, 160, 200)  # scene_summary's side buckets; 48 is the crop's native size


@dataclass(frozen=True)
class FaceTruth:
    """One face in one frame, exactly as pasted.

    ``box`` is the un-rotated square of the 48x48 crop in frame pixels (may reach outside the frame
    while entering or leaving); the face was rotated by ``angle`` degrees, counter-clockwise as
    ``cv2.getRotationMatrix2D``, around the centre ``(x + (w - 1) / 2, y + (h - 1) / 2)``.
    ``visible`` is the share of the square inside the frame.
    """

    identity: int
    row: int
    label: int
    box: Box
    angle: float
    visible: float


@dataclass
class SceneFrame:
    """A generated frame: BGR uint8 with three equal channels, and its faces ordered by identity."""

    index: int
    image: np.ndarray
    faces: list[FaceTruth]


# -- data --------------------------------------------------------------------------------------------
def load_publictest(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FER2013 PublicTest crops and labels.

    Args:
        path: The ``.npz``; default ``fer2013_publictest.npz`` in the shared data folder.

    Returns:
        ``(images, labels)``: uint8 (N, 48, 48) and uint8 (N,) FER2013 codes (see ``EMOTIONS``).
    """
    path = Path(path) if path is not None else data_dir() / "fer2013_publictest.npz"
    with np.load(path, allow_pickle=False) as npz:
        return npz["images"], npz["labels"]


def default_videos() -> list[Path]:
    """The shared videos the backgrounds are cut from."""
    return [data_dir() / "video" / name for name in BACKGROUND_VIDEOS]


def load_backgrounds(video_paths: Sequence[Path | str] | None = None, size: tuple[int, int] = (640, 480),
                     count: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Face-free gray backgrounds cut from video frames.

    Each is a random frame, maybe mirrored, zoomed by 1-1.4x at a random offset to fill ``size``,
    rebuilt from locally shuffled patches and blurred with sigma 12-20 px (at 640 px width) so that
    no face survives (see the module docstring), with mild fixed noise. Haar (1.1, 5) still fires on
    about 5% of them, on 150-350 px windows of blurred clutter, as on any textured scene.

    Args:
        video_paths: Videos to cut from; default the shared ``BACKGROUND_VIDEOS``.
        size: ``(width, height)`` of the scenes.
        count: How many backgrounds.
        seed: Picks frames, mirroring, zoom, offset, blur and noise.

    Returns:
        ``count`` uint8 arrays of shape (height, width).
    """
    paths = [Path(p) for p in (video_paths if video_paths is not None else default_videos())]
    if not paths:
        raise ValueError("no video to cut backgrounds from")
    # One random stream per background: the first k backgrounds are the same whatever the count.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count)]
    lengths = [_frame_count(p) for p in paths]
    # Round-robin over the videos keeps both sources in every set; frame indices are random.
    picks = [(i % len(paths), int(rng.integers(lengths[i % len(paths)]))) for i, rng in enumerate(rngs)]
    frames = _read_frames(paths, set(picks))
    return [_make_background(frames[pick], size, rng) for pick, rng in zip(picks, rngs)]


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    if n <= 0:
        raise ValueError(f"video {path} reports no frames")
    return n


def _read_frames(paths: list[Path], wanted: set[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """Gray frames by (video, index), read sequentially: seeking is slower and not frame-exact in every codec."""
    out: dict[tuple[int, int], np.ndarray] = {}
    for v, path in enumerate(paths):
        indices = {f for vv, f in wanted if vv == v}
        if not indices:
            continue
        cap = cv2.VideoCapture(str(path))
        last = max(indices)
        for f in range(last + 1):
            if not cap.grab():
                break
            if f in indices:
                _, image = cap.retrieve()
                out[(v, f)] = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        cap.release()
        # A container may promise more frames than it decodes: fall back to the last good one.
        for f in indices:
            if (v, f) not in out:
                got = [g for (vv, g) in out if vv == v]
                if not got:
                    raise ValueError(f"cannot decode video {path}")
                out[(v, f)] = out[(v, max(got))]
    return out


def _make_background(gray: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    width, height = size
    if rng.random() < 0.5:
        gray = gray[:, ::-1]
    h, w = gray.shape
    zoom = rng.uniform(1.0, 1.4)
    # The largest window of the scene's aspect that fits, shrunk by the zoom, at a random offset.
    cw = min(w, h * width / height) / zoom
    ch = cw * height / width
    x0 = rng.uniform(0, w - cw)
    y0 = rng.uniform(0, h - ch)
    crop = np.ascontiguousarray(gray[int(y0):int(y0 + ch), int(x0):int(x0 + cw)])
    image = cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    image = _quilt(image, min(max(8, round(PATCH * width / REF_WIDTH)), width, height), rng)
    sigma = rng.uniform(*BLUR_SIGMA) * width / REF_WIDTH
    image = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    image += rng.normal(0.0, rng.uniform(1.0, 2.5), image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _quilt(image: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
    """The image rebuilt from patch x patch squares taken from random nearby places, cross-faded at half overlap.

    No face keeps its eyes, nose and mouth in order, and the fades leave no grid for a detector or an eye.
    """
    height, width = image.shape
    step = patch // 2
    reach = round(REACH * patch)
    window = np.sin(np.pi * (np.arange(patch) + 0.5) / patch) ** 2  # raised cosines: overlaps sum to ~1
    weight2d = np.outer(window, window).astype(np.float32)
    ny, nx = -(-(height + step) // step), -(-(width + step) // step)
    acc = np.zeros((ny * step + patch, nx * step + patch), np.float32)
    norm = np.zeros_like(acc)
    for r in range(ny):
        for c in range(nx):
            # Sources stay near home so the scene's layout and light survive; only the detail moves.
            sy = int(np.clip((r - 1) * step + rng.integers(-reach, reach + 1), 0, height - patch))
            sx = int(np.clip((c - 1) * step + rng.integers(-reach, reach + 1), 0, width - patch))
            acc[r * step:r * step + patch, c * step:c * step + patch] += weight2d * image[sy:sy + patch, sx:sx + patch]
            norm[r * step:r * step + patch, c * step:c * step + patch] += weight2d
    # The first half-patch is under one fade only; start the frame where the fades are complete.
    out = acc[step:step + height, step:step + width] / np.maximum(norm[step:step + height, step:step + width], 1e-6)
    return out


# -- geometry -------------------------------------------------------------------------------------------
def _visible(box: Box, size: tuple[int, int]) -> float:
    x, y, w, h = box
    iw = max(0, min(x + w, size[0]) - max(x, 0))
    ih = max(0, min(y + h, size[1]) - max(y, 0))
    return iw * ih / (w * h)


def _box(cx: float, cy: float, side: int) -> Box:
    # floor(v + 0.5), not round(): banker's rounding would make a steady drift step unevenly.
    return (math.floor(cx - side / 2 + 0.5), math.floor(cy - side / 2 + 0.5), side, side)


@lru_cache(maxsize=512)
def _feather(side: int, margin: int) -> np.ndarray:
    """Alpha of a (side + 2 margin) square: 1 over the face's square, a linear fade across the margin."""
    q = side + 2 * margin
    d = np.minimum(np.arange(q), np.arange(q)[::-1]) + 0.5
    ramp = np.clip(d / max(1.0, margin), 0.0, 1.0).astype(np.float32)
    alpha = np.minimum(ramp[:, None], ramp[None, :])
    alpha.flags.writeable = False  # shared through the cache
    return alpha


# -- scene ----------------------------------------------------------------------------------------------
@dataclass
class _Track:
    identity: int
    row: int
    label: int
    cx: float
    cy: float
    side: float
    vx: float
    vy: float
    dside: float
    angle: float
    dangle: float
    gain: float
    offset: float
    blur: float  # Gaussian sigma in 48x48-crop pixels; 0 for none
    phase: str  # "enter", "live" or "exit"
    life: int  # frames left in the live phase
    exit_by_edge: bool
    axis: int = 0  # while entering/leaving: 0 moves along x, 1 along y
    sign: int = 1  # direction along that axis
    stuck: int = 0  # frames blocked by another face while entering/leaving
    patch_side: int = 0
    patch: np.ndarray | None = None  # premultiplied (face * alpha, alpha) at patch_side


@dataclass(frozen=True)
class _Config:
    size: tuple[int, int]
    max_faces: int
    min_side: int
    max_side: int
    fps: float
    jitter: bool
    blur: bool
    rotate: bool
    noise: bool

    @property
    def px(self) -> float:
        """Pixels per frame at the reference scale -> pixels per frame here."""
        return self.size[0] / REF_WIDTH * REF_FPS / self.fps

    @property
    def per_frame(self) -> float:
        return REF_FPS / self.fps


class _Scene:
    """The moving faces of one scene; ``step`` advances one frame, ``render`` draws it."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, background: np.ndarray, cfg: _Config,
                 motion: np.random.Generator, looks: np.random.Generator) -> None:
        self.images, self.labels, self.cfg = images, labels, cfg
        self.background = background.astype(np.float32)
        self.motion, self.looks = motion, looks
        self.tracks: list[_Track] = []
        self.next_identity = 0
        # Rows without replacement: a crop comes back as a second identity only once all rows were used.
        self.rows = motion.permutation(len(images))
        mean_frames = 6.0 * cfg.fps  # ~1 s entering + 5 s live on average
        target = max(0.8, 0.6 * cfg.max_faces)
        self.spawn_p = min(1.0, target / mean_frames)

    # -- births -----------------------------------------------------------------------------------------
    def start(self) -> None:
        for _ in range(int(self.motion.integers(0, self.cfg.max_faces + 1))):
            self._spawn(edge=False, life_share=self.motion.uniform(0.2, 1.0))

    def maybe_spawn(self) -> None:
        if len(self.tracks) < self.cfg.max_faces and self.motion.random() < self.spawn_p:
            self._spawn(edge=self.motion.random() < 0.6, life_share=1.0)

    def _spawn(self, *, edge: bool, life_share: float) -> None:
        cfg, rng = self.cfg, self.motion
        width, height = cfg.size
        # Log-uniform sides: every octave equally common, so small faces, where detectors fail first, are not rare.
        side = float(np.exp(rng.uniform(math.log(cfg.min_side), math.log(cfg.max_side + 0.49))))
        s = min(cfg.max_side, max(cfg.min_side, round(side)))
        speed = rng.uniform(1.5, 4.0) * cfg.px
        heading = rng.uniform(0, 2 * math.pi)
        drift = rng.uniform(0.0, 2.5) * cfg.px
        vx, vy = drift * math.cos(heading), drift * math.sin(heading)
        axis, sign = 0, 1
        for _ in range(10):
            if edge:
                axis, sign, cx, cy, vx, vy = self._edge_start(s, speed, rng)
            else:
                cx = rng.uniform(s / 2, width - s / 2)
                cy = rng.uniform(s / 2, height - s / 2)
            if not self._blocked(_box(cx, cy, s), None):
                break
        else:
            return  # no room now; a later frame will try again
        identity = self.next_identity
        row = int(self.rows[identity % len(self.rows)])
        angle = rng.uniform(-0.6, 0.6) * MAX_ANGLE
        life = max(1, int(rng.uniform(2.0, 8.0) * cfg.fps * life_share))
        exit_by_edge = bool(rng.random() < 0.6)
        # Looks come from their own stream so that switching them off keeps the motion identical.
        gain, offset = float(self.looks.uniform(0.7, 1.3)), float(self.looks.uniform(-25.0, 25.0))
        blur = float(self.looks.uniform(0.5, 1.5)) if self.looks.random() < 0.25 else 0.0
        self.tracks.append(_Track(
            identity=identity, row=row, label=int(self.labels[row]), cx=cx, cy=cy, side=side, vx=vx, vy=vy,
            dside=0.0, angle=angle, dangle=0.0, gain=gain, offset=offset, blur=blur,
            phase="enter" if edge else "live", life=life, exit_by_edge=exit_by_edge, axis=axis, sign=sign))
        self.next_identity += 1

    def _edge_start(self, s: int, speed: float, rng: np.random.Generator):
        width, height = self.cfg.size
        edge = int(rng.choice(4, p=(0.35, 0.35, 0.15, 0.15)))  # left, right, top, bottom
        inside = rng.uniform(1.0, 0.25 * s)  # a sliver shows on the first frame: visible > 0
        along = rng.normal(0.0, 0.7) * self.cfg.px
        if edge < 2:
            cy = rng.uniform(s / 2, height - s / 2)
            cx = inside - s / 2 if edge == 0 else width - inside + s / 2
            sign = 1 if edge == 0 else -1
            return 0, sign, cx, cy, sign * speed, along
        cx = rng.uniform(s / 2, width - s / 2)
        cy = inside - s / 2 if edge == 2 else height - inside + s / 2
        sign = 1 if edge == 2 else -1
        return 1, sign, cx, cy, along, sign * speed

    # -- motion -----------------------------------------------------------------------------------------
    def step(self) -> None:
        kept = []
        for track in self.tracks:
            if self._move(track):
                kept.append(track)
        self.tracks = kept

    def _move(self, t: _Track) -> bool:
        """Advance one frame; False once the face has gone."""
        cfg, rng = self.cfg, self.motion
        width, height = cfg.size
        # Roll drifts by at most half a degree per frame (at 30 fps) and reflects at +-MAX_ANGLE; it is
        # drawn even with rotate off, and never blocked.
        turn = 0.5 * cfg.per_frame
        t.dangle = float(np.clip(t.dangle + rng.normal(0.0, 0.04 * cfg.per_frame), -turn, turn))
        t.angle += t.dangle
        if abs(t.angle) > MAX_ANGLE:
            t.angle = math.copysign(2 * MAX_ANGLE - abs(t.angle), t.angle)
            t.dangle = -t.dangle
        t.vx += rng.normal(0.0, 0.12 * cfg.px)
        t.vy += rng.normal(0.0, 0.12 * cfg.px)
        speed, top = math.hypot(t.vx, t.vy), 4.0 * cfg.px
        if speed > top:
            t.vx, t.vy = t.vx * top / speed, t.vy * top / speed
        t.dside = float(np.clip(t.dside + rng.normal(0.0, 0.04 * cfg.px), -0.4 * cfg.px, 0.4 * cfg.px))
        old = (t.cx, t.cy, t.side)
        if t.phase == "live":
            self._live_motion(t)
        else:
            # Entering and leaving keep a steady pace along one axis and a fixed size, so the visible
            # share only rises while entering and only falls while leaving.
            v = [t.vx, t.vy]
            v[t.axis] = t.sign * max(abs(v[t.axis]), 1.5 * cfg.px)
            t.vx, t.vy = v
            t.cx += t.vx
            t.cy += t.vy
            self._keep_inside(t, 1 - t.axis)
        s = self._side(t)
        if self._blocked(_box(t.cx, t.cy, s), t):
            t.cx, t.cy, t.side = old
            if t.phase == "live":
                self._turn_away(t)
            else:
                t.stuck += 1
                if t.stuck > 2 * cfg.fps:  # blocked for long: give up the walk and vanish
                    return False
        box = _box(t.cx, t.cy, self._side(t))
        if t.phase == "enter" and _visible(box, (width, height)) == 1.0:
            t.phase, t.stuck = "live", 0
        elif t.phase == "live":
            t.life -= 1
            if t.life <= 0:
                if not t.exit_by_edge:
                    return False
                self._start_exit(t, box)
        elif t.phase == "exit" and _visible(box, (width, height)) == 0.0:
            return False
        return True

    def _live_motion(self, t: _Track) -> None:
        cfg = self.cfg
        # A soft push away from the frame's sides: bouncing alone leaves faces grazing the edges for long.
        width, height = cfg.size
        half, margin, push = t.side / 2, 0.5 * t.side, 0.15 * cfg.px
        t.vx += push * ((t.cx - half < margin) - (width - t.cx - half < margin))
        t.vy += push * ((t.cy - half < margin) - (height - t.cy - half < margin))
        t.side += t.dside
        if not cfg.min_side <= t.side <= cfg.max_side:
            t.side = float(np.clip(t.side, cfg.min_side, cfg.max_side))
            t.dside = -t.dside
        t.cx += t.vx
        t.cy += t.vy
        self._keep_inside(t, 0)
        self._keep_inside(t, 1)

    def _keep_inside(self, t: _Track, axis: int) -> None:
        """Bounce off the frame's sides along ``axis`` so the whole square stays in view."""
        half = self._side(t) / 2
        extent = self.cfg.size[axis]
        pos, vel = (t.cx, t.vx) if axis == 0 else (t.cy, t.vy)
        if pos < half:
            pos, vel = half, abs(vel)
        elif pos > extent - half:
            pos, vel = extent - half, -abs(vel)
        if axis == 0:
            t.cx, t.vx = pos, vel
        else:
            t.cy, t.vy = pos, vel

    def _turn_away(self, t: _Track) -> None:
        """Head away from the nearest other face, at the same speed."""
        others = [o for o in self.tracks if o is not t]
        if not others:
            return
        near = min(others, key=lambda o: (o.cx - t.cx) ** 2 + (o.cy - t.cy) ** 2)
        dx, dy = t.cx - near.cx, t.cy - near.cy
        norm = math.hypot(dx, dy) or 1.0
        speed = max(math.hypot(t.vx, t.vy), 0.5 * self.cfg.px)
        t.vx, t.vy = speed * dx / norm, speed * dy / norm

    def _start_exit(self, t: _Track, box: Box) -> None:
        width, height = self.cfg.size
        x, y, s, _ = box
        gaps = (x, width - x - s, y, height - y - s)  # left, right, top, bottom
        edge = int(np.argmin(gaps))
        t.phase, t.stuck = "exit", 0
        t.axis, t.sign = edge // 2, (-1, 1)[edge % 2]
        speed = self.motion.uniform(1.5, 4.0) * self.cfg.px
        if t.axis == 0:
            t.vx = t.sign * speed
        else:
            t.vy = t.sign * speed

    def _side(self, t: _Track) -> int:
        return min(self.cfg.max_side, max(self.cfg.min_side, round(t.side)))

    def _blocked(self, box: Box, me: _Track | None) -> bool:
        return any(iou(box, _box(o.cx, o.cy, self._side(o))) >= MAX_IOU for o in self.tracks if o is not me)

    # -- drawing ----------------------------------------------------------------------------------------
    def render(self, index: int, noise: np.random.Generator) -> SceneFrame:
        cfg = self.cfg
        frame = self.background.copy()
        faces = []
        for t in sorted(self.tracks, key=lambda tr: tr.identity):
            box = _box(t.cx, t.cy, self._side(t))
            angle = float(t.angle) if cfg.rotate else 0.0
            self._paste(frame, t, box, angle)
            faces.append(FaceTruth(t.identity, t.row, t.label, box, angle, _visible(box, cfg.size)))
        # Noise is drawn even when off so that the stream's position never depends on the switch.
        grain = noise.standard_normal(frame.shape, dtype=np.float32)
        if cfg.noise:
            frame += grain * 2.0
        np.clip(frame + 0.5, 0, 255, out=frame)
        gray = frame.astype(np.uint8)
        return SceneFrame(index, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), faces)

    def _patch(self, t: _Track, s: int) -> np.ndarray:
        """The face at side s with its looks and its faded margin, premultiplied by the alpha;
        cached while s holds."""
        if t.patch is None or t.patch_side != s:
            face = self.images[t.row].astype(np.float32)
            if self.cfg.jitter:
                face = face * t.gain + t.offset  # linear, so doing it at 48 px equals doing it after upscaling
            face = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC)
            if self.cfg.blur and t.blur > 0:
                # Sigma is given in crop pixels so the blur costs the classifier the same at any size.
                face = cv2.GaussianBlur(face, (0, 0), t.blur * s / FER_SIDE, borderType=cv2.BORDER_REFLECT)
            m = max(1, round(MARGIN * s))
            mirrored = cv2.copyMakeBorder(face, m, m, m, m, cv2.BORDER_REFLECT_101)
            # Blurred, so the mirrored edge reads as hair and skin going on, not as a second face.
            margin = cv2.GaussianBlur(mirrored, (0, 0), m / 2, borderType=cv2.BORDER_REFLECT)
            margin[m:m + s, m:m + s] = face
            alpha = _feather(s, m)
            t.patch, t.patch_side = np.dstack([margin * alpha, alpha]), s
        return t.patch

    def _paste(self, frame: np.ndarray, t: _Track, box: Box, angle: float) -> None:
        x, y, s, _ = box
        patch = self._patch(t, s)
        q = patch.shape[0]
        ms = (q - s) // 2
        rad = math.radians(angle)
        # Room for the rotated patch's corners around it.
        m = math.ceil(q * (abs(math.cos(rad)) + abs(math.sin(rad)) - 1) / 2) + 1
        p = q + 2 * m
        c = (q - 1) / 2 + m  # the face square's centre, in the padded patch
        rot = cv2.getRotationMatrix2D((c, c), angle, 1.0)
        rot[:, 2] += rot[:, :2] @ np.array([m, m], np.float64)  # shift the face into the padded patch first
        warped = cv2.warpAffine(patch, rot, (p, p), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        height, width = frame.shape
        x0, y0 = x - ms - m, y - ms - m
        fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + p, width), min(y0 + p, height)
        if fx0 >= fx1 or fy0 >= fy1:
            return
        part = warped[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        region = frame[fy0:fy1, fx0:fx1]
        region *= 1.0 - part[..., 1]
        region += part[..., 0]


def generate_scene(images: np.ndarray, labels: np.ndarray, *, backgrounds: Sequence[np.ndarray], seed: int,
                   frames: int = 300, size: tuple[int, int] = (640, 480), max_faces: int = 4, min_side: int = 40,
                   max_side: int = 200, fps: float = 30.0, jitter: bool = True, blur: bool = True,
                   rotate: bool = True, noise: bool = True) -> Iterator[SceneFrame]:
    """Frames of one synthetic scene with exact face truth, generated lazily.

    Identities (one image row each, never reused) enter through an edge or appear, drift with a
    smooth random walk, change size and roll slowly, and leave through an edge or vanish; squares of
    different faces keep IoU < ``MAX_IOU``. Only faces with some part in view are reported.

    Args:
        images: uint8 (N, 48, 48) gray face crops (FER2013 framing).
        labels: (N,) emotion codes; ``FaceTruth.row`` indexes both arrays.
        backgrounds: Gray (H, W) or BGR (H, W, 3) uint8 images of ``size``; one is picked per scene.
        seed: Everything follows from it.
        frames: Number of frames.
        size: ``(width, height)``.
        max_faces: Most faces on screen at once.
        min_side: Smallest square side in pixels.
        max_side: Largest square side in pixels (at most the frame's smaller side).
        fps: Frame rate; speeds per second and lifetimes in seconds stay about the same at any rate.
        jitter: Per-face brightness and contrast changes (gain 0.7-1.3, offset +-25).
        blur: A quarter of faces blurred (sigma 0.5-1.5 crop pixels).
        rotate: In-plane rotation up to +-15 degrees; off reports angle 0.
        noise: Per-frame sensor noise (sigma 2 gray levels).

    Yields:
        One ``SceneFrame`` per frame index.
    """
    width, height = size
    if not 0 < min_side <= max_side <= min(width, height):
        raise ValueError(f"need 0 < min_side <= max_side <= {min(width, height)}, got {min_side}, {max_side}")
    if max_faces < 0 or frames < 0 or fps <= 0:
        raise ValueError("max_faces and frames must be >= 0 and fps > 0")
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError("images and labels must be non-empty and of the same length")
    if not backgrounds:
        raise ValueError("no background")
    cfg = _Config((width, height), max_faces, min_side, max_side, fps, jitter, blur, rotate, noise)
    motion, looks, grain = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    background = _gray(backgrounds[int(motion.integers(len(backgrounds)))], size)
    scene = _Scene(images, labels, background, cfg, motion, looks)
    for index in range(frames):
        if index == 0:
            scene.start()
        else:
            scene.step()
            scene.maybe_spawn()
        yield scene.render(index, grain)


def _gray(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.shape[::-1] != tuple(size):
        raise ValueError(f"background is {image.shape[1]}x{image.shape[0]}, scene is {size[0]}x{size[1]}")
    return image


# -- truth -------------------------------------------------------------------------------------------------
def crop_truth(frame: SceneFrame, face: FaceTruth) -> np.ndarray:
    """The 48x48 crop an ideal detector and FER framing would cut from this frame for this face.

    The gray frame is rotated back upright by ``-angle`` around the box centre (cubic, as the paste),
    the box cut out (black outside the frame) and resized with INTER_AREA, as the producer does.

    Args:
        frame: A generated frame.
        face: One of its faces.

    Returns:
        uint8 (48, 48).
    """
    image = frame.image
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    x, y, w, h = face.box
    rot = cv2.getRotationMatrix2D((x + (w - 1) / 2, y + (h - 1) / 2), -face.angle, 1.0)
    rot[:, 2] -= (x, y)  # only the box's window of the rotated frame is needed
    upright = cv2.warpAffine(gray, rot, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0)
    return cv2.resize(upright, (FER_SIDE, FER_SIDE), interpolation=cv2.INTER_AREA)


def _bucket(side: int) -> str:
    lo = 0
    for edge in SIZE_EDGES:
        if side < edge:
            return f"<{edge}" if lo == 0 else f"{lo}-{edge - 1}"
        lo = edge
    return f"{lo}+"


def scene_summary(frames: Iterable[SceneFrame]) -> dict:
    """Counts that describe a scene (consumes a generator).

    Args:
        frames: The scene's frames.

    Returns:
        ``frames``, ``face_frames`` (faces summed over frames), ``partial_face_frames`` (visible < 0.8),
        ``identities``, ``mean_faces_per_frame``, ``max_faces_per_frame``, ``empty_frames``,
        ``sizes`` (face-frames per side bucket, all buckets listed) and ``labels`` (identities per emotion).
    """
    sizes = {_bucket(s): 0 for s in (0, *SIZE_EDGES)}
    n = face_frames = partial = empty = most = 0
    labels: dict[int, int] = {}
    for frame in frames:
        n += 1
        face_frames += len(frame.faces)
        most = max(most, len(frame.faces))
        empty += not frame.faces
        for face in frame.faces:
            sizes[_bucket(face.box[2])] += 1
            partial += face.visible < 0.8
            labels[face.identity] = face.label
    by_label = {name: 0 for name in EMOTIONS}
    for code in labels.values():
        name = EMOTIONS[code] if code < len(EMOTIONS) else str(code)
        by_label[name] = by_label.get(name, 0) + 1
    return {"frames": n, "face_frames": face_frames, "partial_face_frames": partial, "identities": len(labels),
            "mean_faces_per_frame": face_frames / n if n else 0.0, "max_faces_per_frame": most,
            "empty_frames": empty, "sizes": sizes, "labels": by_label}


# -- command line -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Generate one scene, print its summary and speed, write a few frames (with boxes) as PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("/tmp/scenes"))
    ap.add_argument("--every", type=int, default=100, help="write every n-th frame")
    args = ap.parse_args(argv)
    images, labels = load_publictest()
    backgrounds = load_backgrounds(size=(640, 480), count=16, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    truth: list[SceneFrame] = []
    seconds = 0.0
    scene = generate_scene(images, labels, backgrounds=backgrounds, seed=args.seed, frames=args.frames)
    while True:
        t0 = time.perf_counter()
        frame = next(scene, None)
        seconds += time.perf_counter() - t0  # generation only, not the PNG writing
        if frame is None:
            break
        if frame.index % args.every == 0:
            _write_pngs(frame, args.out / f"seed{args.seed}_{frame.index:04d}")
        truth.append(SceneFrame(frame.index, frame.image[:0], frame.faces))  # the truth, not the pixels
    print(f"{len(truth)} frames in {seconds:.2f} s ({len(truth) / max(seconds, 1e-9):.0f} frames/s); "
          f"PNGs in {args.out}")
    print(scene_summary(truth))
    return 0


def _write_pngs(frame: SceneFrame, stem: Path) -> None:
    cv2.imwrite(f"{stem}.png", frame.image)
    marked = frame.image.copy()
    for face in frame.faces:
        x, y, w, h = face.box
        cv2.rectangle(marked, (x, y), (x + w - 1, y + h - 1), (0, 0, 255), 1)
        cv2.putText(marked, f"{face.identity} {EMOTIONS[face.label]} {face.angle:+.0f}", (x, max(10, y - 3)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
    cv2.imwrite(f"{stem}_truth.png", marked)


if __name__ == "__main__":
    sys.exit(main())
