"""Fit each detector's crop framing: where FER2013's square sits relative to its boxes.

    python -m benchmarks.framing [--frames 300]

Two fits, side by side:

- **real (shipped)**: FER2013's faces were cut along the boxes of OpenCV's face detector
  (Goodfellow et al. 2013, the dataset's paper: "OpenCV face recognition was used to obtain
  bounding boxes around each face", crops corrected by hand where needed), so the Haar box
  *is* the FER framing. Every other detector is fitted to the Haar box of the same face on
  every frame of both real clips where both find it (Haar at scaleFactor 1.1 for tighter
  boxes). This is what ships: it relates the detectors as they behave on real faces.
- **scenes**: every detector on labelled scenes (``benchmarks/scenes.py``, seeds apart from
  the detection benchmark's) where each face's FER2013 square is known exactly. The DNN
  detectors box a pasted 48x48 face without its head around it tighter than a real one
  (BlazeFace's square is 1.13-1.28 times its box there, depending on the faces' sizes, against
  1.06 on real faces), so this fit would crop real faces too loosely; it is kept as a check
  (Haar's scene fit should be ~1).

Prints the constants to paste into ``producers/detection/framing.py`` and writes
``benchmarks/results/framing.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import finish, machine_info, table  # noqa: E402

FIT_SEEDS = (101, 102, 103)
SIZE = (640, 480)


def pair_up(truth, detections) -> list[tuple]:
    """(detection, truth face) pairs: each truth face takes the nearest unused detection whose
    centre lies inside its square."""
    pairs, used = [], set()
    for t in truth:
        x, y, w, h = t.box
        cx, cy = x + w / 2, y + h / 2
        best, best_d = None, None
        for j, d in enumerate(detections):
            if j in used:
                continue
            dx, dy = d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2
            if x <= dx <= x + w and y <= dy <= y + h:
                dist = (dx - cx) ** 2 + (dy - cy) ** 2
                if best_d is None or dist < best_d:
                    best, best_d = j, dist
        if best is not None:
            used.add(best)
            pairs.append((detections[best], t))
    return pairs


def fit_detector(name: str, scenes_frames: list) -> dict:
    from fer_pipeline.producers.detection import build_detector
    from fer_pipeline.producers.detection.framing import Framing
    from fer_pipeline.settings import ProducerSettings

    detector = build_detector(ProducerSettings(detector=name))
    triples, truths = [], 0
    for image, truth in scenes_frames:
        faces = [t for t in truth if t.visible >= 0.99]
        truths += len(faces)
        for det, t in pair_up(faces, detector.detect(image)):
            triples.append((det.box, tuple(float(v) for v in t.box), det.roll if det.eyes else 0.0))
    framing = Framing.fit(triples)
    return {"detector": name, "pairs": len(triples), "faces": truths, "scale": framing.scale, "dx": framing.dx,
            "dy": framing.dy}


def fit_on_real(name: str, clips: list[list]) -> dict:
    """The detector's framing onto the Haar box of the same face, over every real frame."""
    from benchmarks.face_metrics import match
    from fer_pipeline.producers.detection import build_detector
    from fer_pipeline.producers.detection.framing import Framing
    from fer_pipeline.settings import ProducerSettings

    haar = build_detector(ProducerSettings(detector="haar", scale_factor=1.1, min_neighbors=5))
    detector = build_detector(ProducerSettings(detector=name))
    triples = []
    for frames in clips:
        for image in frames:
            ref, found = haar.detect(image), detector.detect(image)
            for i, j in match([d.box for d in ref], [d.box for d in found], 0.3):
                x, y, w, h = ref[i].box
                side = (w + h) / 2
                triples.append((found[j].box, (x + w / 2 - side / 2, y + h / 2 - side / 2, side, side),
                                found[j].roll if found[j].eyes else 0.0))
    framing = Framing.fit(triples)
    return {"detector": name, "pairs": len(triples), "scale": framing.scale, "dx": framing.dx, "dy": framing.dy}


def load_real_frames() -> list[list]:
    import cv2

    from benchmarks._common import data_dir

    clips = []
    for name in ("woman2.mp4", "short_hamilton_clip.mp4"):
        cap = cv2.VideoCapture(str(data_dir() / "video" / name))
        frames = []
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(image)
        cap.release()
        clips.append(frames)
    return clips


def run(*, frames: int = 300, out_dir: Path | None = None) -> dict:
    import cv2

    from benchmarks import scenes
    from fer_pipeline.settings import DETECTORS

    machine = machine_info()
    images, labels = scenes.load_publictest()
    backgrounds = scenes.load_backgrounds(size=SIZE, count=8, seed=11)
    frames_list = []
    for seed in FIT_SEEDS:
        for f in scenes.generate_scene(images, labels, backgrounds=backgrounds, seed=seed, frames=frames, size=SIZE):
            frames_list.append((f.image, f.faces))
    cv2.setNumThreads(1)
    rows = [fit_detector(name, frames_list) for name in DETECTORS]
    print("scenes (FER2013 squares known exactly; a check, not shipped):")
    print(table(["detector", "pairs", "faces", "scale", "dx", "dy"],
                [[r["detector"], r["pairs"], r["faces"], r["scale"], r["dx"], r["dy"]] for r in rows], digits=3))
    real_clips = load_real_frames()
    real = [{"detector": "haar", "pairs": None, "scale": 1.0, "dx": 0.0, "dy": 0.0}]
    real += [fit_on_real(name, real_clips) for name in DETECTORS if name != "haar"]
    print("\nreal frames, onto the Haar box of the same face (shipped):")
    print(table(["detector", "pairs", "scale", "dx", "dy"],
                [[r["detector"], r["pairs"], r["scale"], r["dx"], r["dy"]] for r in real], digits=3))
    print("\nFRAMINGS = {")
    for r in real:
        print(f'    "{r["detector"]}": Framing({r["scale"]:.3f}, {r["dx"]:.3f}, {r["dy"]:.3f}),')
    print("}")
    results = {"settings": {"seeds": FIT_SEEDS, "frames_per_scene": frames, "size": SIZE}, "scenes": rows,
               "real": real,
               "headline": {r["detector"]: {"scale": r["scale"], "dx": r["dx"], "dy": r["dy"]} for r in real}}
    finish("framing", results, machine, out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300, help="frames per fitting scene")
    ap.add_argument("--out-dir", type=Path, help="where to write framing.json (default benchmarks/results)")
    a = ap.parse_args(argv)
    run(frames=a.frames, out_dir=a.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
