from __future__ import annotations

import csv

import numpy as np
import pytest

from fer_pipeline.errors import DataError
from fer_pipeline.labels import EMOTIONS, FER2013_CODE_NAMES, FERPLUS_COLUMNS, INDEX
from fer_pipeline.trainer import data as fdata
from fer_pipeline.trainer.job import load_training_set
from tests.trainer.conftest import synthetic_faces, write_npz


def _csv(path, rows, header=("emotion", "pixels", "Usage")):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _pixels(img: np.ndarray) -> str:
    return " ".join(str(v) for v in img.ravel())


def test_npz_maps_codes_to_alphabetical_order(tmp_path):
    images, codes = synthetic_faces(21, seed=0)
    fs = fdata.load(write_npz(tmp_path / "f.npz", images, codes))
    assert np.array_equal(fs.images, images)
    assert [EMOTIONS[i] for i in fs.labels] == [FER2013_CODE_NAMES[c] for c in codes]
    # Spot-check the codes whose position moves: 4=sad -> 5, 6=neutral -> 4.
    assert fs.labels[list(codes).index(4)] == INDEX["sad"] == 5
    assert fs.labels[list(codes).index(6)] == INDEX["neutral"] == 4


def test_npz_without_names_uses_fer2013_codes(tmp_path):
    np.savez(tmp_path / "f.npz", images=np.zeros((7, 48, 48), np.uint8), labels=np.arange(7, dtype=np.uint8))
    assert fdata.load_npz(tmp_path / "f.npz").labels.tolist() == [0, 1, 2, 3, 5, 6, 4]


@pytest.mark.parametrize("shape", [(3, 64, 64), (3, 48, 48, 3)])
def test_npz_wrong_image_size_is_a_data_error(tmp_path, shape):
    np.savez(tmp_path / "f.npz", images=np.zeros(shape, np.uint8), labels=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="48, 48"):
        fdata.load(tmp_path / "f.npz")


@pytest.mark.parametrize("name", ["missing.npz", "missing.csv", "missing"])
def test_missing_data_is_a_data_error(tmp_path, name):
    with pytest.raises(DataError, match="not found"):
        fdata.load(tmp_path / name)


def test_unsupported_form_is_a_data_error(tmp_path):
    (tmp_path / "faces.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported"):
        fdata.load(tmp_path / "faces.txt")


def test_kaggle_csv_filters_usage_and_maps_codes(tmp_path):
    images, codes = synthetic_faces(9, seed=3)
    usage = ["Training"] * 6 + ["PublicTest"] * 2 + ["PrivateTest"]
    path = _csv(tmp_path / "fer2013.csv", [(int(c), _pixels(im), u) for im, c, u in zip(images, codes, usage)])
    train = fdata.load(path, usage="Training")
    test = fdata.load(path, usage="PublicTest")
    assert len(train) == 6 and len(test) == 2
    assert np.array_equal(train.images, images[:6]) and np.array_equal(test.images, images[6:8])
    assert train.labels.tolist() == [fdata.FER2013_CODE_TO_INDEX[c] for c in codes[:6]]
    assert len(fdata.load_csv(path)) == 9


def test_csv_errors_name_the_line(tmp_path):
    bad = _csv(tmp_path / "bad.csv", [(0, _pixels(np.zeros((48, 48), np.uint8)), "Training"), (1, "1 2 3", "Training")])
    with pytest.raises(DataError, match=r"bad.csv:3: expected 2304"):
        fdata.load_csv(bad)
    code = _csv(tmp_path / "code.csv", [(9, _pixels(np.zeros((48, 48), np.uint8)), "Training")])
    with pytest.raises(DataError, match="unknown emotion code 9"):
        fdata.load_csv(code)
    cols = _csv(tmp_path / "cols.csv", [("x",)], header=("label",))
    with pytest.raises(DataError, match="missing csv columns"):
        fdata.load_csv(cols)
    with pytest.raises(DataError, match="no rows with Usage PrivateTest"):
        fdata.load_csv(bad, usage="PrivateTest")


def _folder(root, classes: dict[str, list[np.ndarray]]):
    import cv2

    for name, imgs in classes.items():
        (root / name).mkdir(parents=True)
        for k, img in enumerate(imgs):
            assert cv2.imwrite(str(root / name / f"{k}.png"), img)
    return root


def test_folder_layout_with_aliases(tmp_path):
    images, _ = synthetic_faces(5, seed=4)
    root = _folder(tmp_path / "train", {"happy": [images[0], images[1]], "Surprised": [images[2]],
                                        "anger": [images[3], images[4]]})
    (root / "happy" / "notes.txt").write_text("ignored: not an image")
    fs = fdata.load(root)
    written = {0: "happy", 1: "happy", 2: "surprise", 3: "angry", 4: "angry"}
    assert len(fs) == 5
    for img, label in zip(fs.images, fs.labels):  # png keeps pixels exactly: find each one's source
        k = next(k for k in written if np.array_equal(images[k], img))
        assert EMOTIONS[label] == written[k]


def test_folder_errors(tmp_path):
    small = np.zeros((40, 40), np.uint8)
    _folder(tmp_path / "size", {"sad": [small]})
    with pytest.raises(DataError, match="expected a 48x48 image, got 40x40"):
        fdata.load(tmp_path / "size")
    _folder(tmp_path / "cls", {"contempt": [np.zeros((48, 48), np.uint8)]})
    with pytest.raises(DataError, match="unknown class folder 'contempt'"):
        fdata.load(tmp_path / "cls")
    (tmp_path / "empty" / "sad").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        fdata.load(tmp_path / "empty")


def _ferplus_csv(path, votes: list[list[int]]):
    header = ["Usage", "Image name", *FERPLUS_COLUMNS]
    return _csv(path, [["Training", f"fer{k:07d}.png", *v] for k, v in enumerate(votes)], header=header)


def test_ferplus_votes_become_soft_targets_in_model_order(tmp_path):
    # Columns: neutral happiness surprise sadness anger disgust fear contempt unknown NF
    path = _ferplus_csv(tmp_path / "fp.csv", [
        [10, 0, 0, 0, 0, 0, 0, 0, 0, 0],   # row 0 (skipped by start=1)
        [0, 6, 2, 0, 0, 0, 0, 2, 0, 0],    # happy 6, surprise 2, contempt dropped
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],   # not a face, no votes
        [0, 0, 0, 5, 5, 0, 0, 0, 0, 0],    # sad/angry split
    ])
    soft, nf = fdata.load_ferplus(path, start=1, count=3)
    expect = np.zeros((3, 7), np.float32)
    expect[0, INDEX["happy"]], expect[0, INDEX["surprise"]] = 0.75, 0.25
    expect[2, INDEX["sad"]], expect[2, INDEX["angry"]] = 0.5, 0.5
    np.testing.assert_allclose(soft, expect)
    assert nf.tolist() == [False, True, False]
    with pytest.raises(DataError, match="expected 5 rows from 0, found 4"):
        fdata.load_ferplus(path, 0, 5)
    wrong = _csv(tmp_path / "wrong.csv", [["Training", "x", 1]], header=("Usage", "Image name", "neutral"))
    with pytest.raises(DataError, match="unexpected FER\\+ columns"):
        fdata.load_ferplus(wrong, 0, 1)


def test_training_set_attaches_ferplus_only_where_rows_line_up(tmp_path):
    images, codes = synthetic_faces(4, seed=5)
    npz = write_npz(tmp_path / "t.npz", images, codes)
    votes = _ferplus_csv(tmp_path / "fp.csv", [[0, 0, 0, 0, 0, 0, 10, 0, 0, 0]] * 4)
    with_votes = load_training_set(str(npz), str(votes), tmp_path)
    assert np.allclose(with_votes.soft[:, INDEX["fear"]], 1.0) and not with_votes.not_face.any()
    assert load_training_set(str(npz), "none", tmp_path).soft is None
    # "shared" applies only to FER2013 Training in its original order: not these 4 rows.
    assert load_training_set(str(npz), "shared", tmp_path).soft is None
    folder = _folder(tmp_path / "train", {"fear": [images[0]]})
    with pytest.raises(DataError, match="not a folder"):
        load_training_set(str(folder), str(votes), tmp_path)
