"""``emoflow import`` on small dataset trees written from real photographs.

Detection mode: skimage's astronaut and matplotlib's Grace Hopper as a CK+-style frame group,
a folder of frames and an MP4; a coffee cup (no face) is excluded. Cropped mode: skimage's
``lfw_subset`` (25×25 gray faces) as 3-frame clips with contempt and without neutral.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from matplotlib import cbook

from emoflow.config import load_params
from emoflow.datasets.importer import (
    ImportOptions,
    find_clips,
    frame_prefix,
    import_dataset,
    natural_key,
    order_classes,
)
from emoflow.errors import InputError
from emoflow.faces.stage import FACES_COLUMNS
from emoflow.faces.store import FaceClip
from emoflow.media.video import MediaWriter

CK_REGEX = r"^(S\d+)_"
PARAMS_YAML = """\
faces:
  size: {size}
  detect_scale: 1.0   # the test photos' faces are ~100 px: full-resolution HOG finds them
  cnn_fallback: false
  frames: 4
  min_face_frames: 3
  workers: 1
"""


def _grace() -> np.ndarray:
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _frames(rgb: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` different frames of one photo: small shifts and brightness changes."""
    out = []
    for k in range(n):
        f = np.roll(rgb, (k % 3 - 1, 2 * k), axis=(0, 1)).astype(np.float32)
        out.append(np.clip(f * (0.9 + 0.03 * k), 0, 255).astype(np.uint8))
    return out


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), img)


def _params(tmp: Path, size: int) -> Path:
    path = tmp / "params.yaml"
    path.write_text(PARAMS_YAML.format(size=size))
    return path


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CK+-style group, frame folder (frame1..frame12), MP4, and a clip without a face."""
    root = tmp_path_factory.mktemp("ck") / "raw"
    for i, f in enumerate(_frames(_grace(), 5), start=1):
        _png(root / "Happiness" / f"S010_001_{i:08d}.png", f)
    for i, f in enumerate(_frames(skimage.data.astronaut(), 12), start=1):
        _png(root / "surprise" / "S011_002" / f"frame{i}.png", f)
    video = root / "anger" / "S012_003.mp4"
    video.parent.mkdir(parents=True)
    frames = _frames(skimage.data.astronaut(), 8)
    with MediaWriter(video, fps=10, width=512, height=512, sample_rate=None) as w:
        for f in frames:
            w.write_frame(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    for i, f in enumerate(_frames(skimage.data.coffee(), 3), start=1):
        _png(root / "sadness" / f"S010_004_{i:04d}.png", f)
    (root / "sadness" / "S010_004.txt").write_text("landmarks, not a frame")
    return root


@pytest.fixture(scope="module")
def cropped_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lfw faces (25×25 gray) as 3-frame clips of 6 subjects in 4 labels, no neutral."""
    root = tmp_path_factory.mktemp("lfw") / "raw"
    faces = (skimage.data.lfw_subset()[:96] * 255).round().astype(np.uint8)
    labels = ("contempt", "happiness", "sadness", "surprise")
    for c in range(32):
        label, subject = labels[c % 4], f"P{c % 6 + 1:02d}"
        for k in range(3):
            if c % 5 == 0:  # some clips as a folder of frames
                _png(root / label / f"{subject}-clip{c}" / f"{k}.png", faces[3 * c + k])
            else:
                _png(root / label / f"{subject}-clip{c}_{k + 1}.png", faces[3 * c + k])
    return root


@pytest.fixture(scope="module")
def imported(video_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ck_out")
    out = tmp / "imported" / "ck"
    import_dataset(video_tree, out, load_params(_params(tmp, 64)),
                   ImportOptions(CK_REGEX, peak="last"))  # fmt: skip
    return out


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "faces.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == FACES_COLUMNS
        return {r["trial_id"]: r for r in reader}


def test_names_group_and_sort_naturally() -> None:
    assert frame_prefix("S005_001_00000011") == "S005_001"
    assert frame_prefix("frame10") == "frame"
    assert frame_prefix("00042") == "00042"  # a bare number is a clip by itself
    assert frame_prefix("portrait") == "portrait"
    names = sorted(["frame10.png", "frame2.png", "frame1.png"], key=natural_key)
    assert names == ["frame1.png", "frame2.png", "frame10.png"]
    assert order_classes({"sadness", "anger"}, ("anger", "sadness", "neutral")) == [
        "anger", "sadness"]  # fmt: skip
    assert order_classes({"contempt", "anger"}, ("sadness", "anger")) == ["anger", "contempt"]


def test_finds_the_three_clip_kinds(video_tree: Path) -> None:
    found = find_clips(video_tree, ImportOptions(CK_REGEX))
    kinds = {(c.label, c.name): (c.kind, len(c.paths)) for c in found.clips}
    assert kinds == {
        ("happiness", "S010_001"): ("group", 5), ("surprise", "S011_002"): ("folder", 12),
        ("anger", "S012_003.mp4"): ("video", 1), ("sadness", "S010_004"): ("group", 3),
    }  # fmt: skip
    folder = next(c for c in found.clips if c.kind == "folder")
    assert [p.name for p in folder.paths[:3]] == ["frame1.png", "frame2.png", "frame3.png"]
    assert [p.name for p in found.ignored] == ["S010_004.txt"]


def test_detected_faces_in_processed_format(imported: Path) -> None:
    rows = _rows(imported)
    assert set(rows) == {"S010_001", "S011_002", "S012_003", "S010_004"}
    assert {t: r["participant"] for t, r in rows.items()} == {
        "S010_001": "S010", "S011_002": "S011", "S012_003": "S012", "S010_004": "S010"}  # fmt: skip
    assert (imported / "classes.txt").read_text().split() == [
        "anger",
        "happiness",
        "sadness",
        "surprise",
    ]  # params.classes order, neutral absent
    assert rows["S010_004"]["excluded"].startswith("face in 0 of 3 frames")
    assert rows["S010_004"]["file"] == ""
    expected = {"S010_001": ("happiness", 5), "S011_002": ("surprise", 12),
                "S012_003": ("anger", 8)}  # fmt: skip
    for tid, (label, n) in expected.items():
        r = rows[tid]
        assert r["label"] == label and r["excluded"] == ""
        assert int(r["frames_decoded"]) == n and int(r["frames_with_face"]) == n
        assert int(r["hog"]) + int(r["tracked"]) == n
        selected = [int(s) for s in r["selected"].split()]
        assert len(selected) == min(n, 4) and selected[-1] == n - 1  # the peak: last frame
        assert int(r["peak_position"]) == len(selected) - 1
        assert r["file"] == f"{label}/{tid}.faces.zip"
        with FaceClip(imported / r["file"]) as clip:
            assert len(clip) == len(selected)
            assert clip.frame(0).shape == (64, 64, 3)
            assert clip.meta["participant"] == tid[:4] and clip.meta["frames"] == selected


def test_cropped_gray_faces_kept_gray(cropped_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "lfw"
    import_dataset(cropped_tree, out, load_params(_params(tmp_path, 48)),
                   ImportOptions(r"^(?P<subject>P\d+)-", cropped=True))  # fmt: skip
    rows = _rows(out)
    assert len(rows) == 32 and not any(r["excluded"] for r in rows.values())
    assert (out / "classes.txt").read_text().split() == [
        "contempt",
        "happiness",
        "sadness",
        "surprise",
    ]  # from the data: sorted
    assert {r["participant"] for r in rows.values()} == {f"P{i:02d}" for i in range(1, 7)}
    assert "P01-clip0" in rows and "P02-clip1" in rows  # folder clip, group clip
    r = rows["P02-clip1"]
    assert (r["frames_decoded"], r["frames_with_face"], r["selected"]) == ("3", "3", "0 1 2")
    assert r["hog"] == r["tracked"] == "0" and r["peak_position"] == ""
    with FaceClip(out / r["file"]) as clip:
        assert len(clip) == 3 and clip.meta["grayscale"] is True
        assert clip.frame(1, grayscale=True).shape == (48, 48)  # 25×25 resized to faces.size
    with zipfile.ZipFile(out / r["file"]) as z:  # stored as one-channel JPEGs
        jpg = cv2.imdecode(np.frombuffer(z.read("00000.jpg"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert jpg.ndim == 2


def test_cropped_more_frames_than_kept_uses_kmeans(tmp_path: Path) -> None:
    faces = (skimage.data.lfw_subset()[:10] * 255).astype(np.uint8)
    for k, f in enumerate(faces):
        _png(tmp_path / "raw" / "fear" / "s1_seq" / f"{k}.png", f)
    out = tmp_path / "out"
    rows = import_dataset(tmp_path / "raw", out, load_params(_params(tmp_path, 32)),
                          ImportOptions(r"(s\d+)_", cropped=True, peak="last"))  # fmt: skip
    selected = [int(s) for s in rows[0]["selected"].split()]
    assert len(selected) == 4 and selected[-1] == 9 and rows[0]["peak_position"] == 3


def test_unmatched_subject_fails_and_writes_nothing(video_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"S012_003\.mp4.*\^\(S01\[01\]\)_") as info:
        import_dataset(video_tree, out, load_params(_params(tmp_path, 64)),
                       ImportOptions(r"^(S01[01])_"))  # fmt: skip
    assert "S012_003" in str(info.value.path)
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    with pytest.raises(InputError, match="capture group"):
        import_dataset(video_tree, out, load_params(_params(tmp_path, 64)),
                       ImportOptions(r"S\d+"))  # fmt: skip


def test_cli_import_with_folds(cropped_tree: Path, tmp_path: Path) -> None:
    pytest.importorskip("emoflow.datasets.splits")
    from typer.testing import CliRunner

    from emoflow.cli import app

    out = tmp_path / "imported" / "lfw"
    result = CliRunner().invoke(app, [
        "import", str(cropped_tree), "--out", str(out), "--subject-regex", r"^(P\d+)-",
        "--cropped", "--grayscale", "--folds", "2", "--params", str(_params(tmp_path, 48)),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    folds = sorted((out / "splits" / "folds").iterdir())
    assert [f.name for f in folds] == ["fold_0", "fold_1"]
    for fold in folds:
        people = {}
        for s in ("train", "val", "test"):
            with (fold / f"{s}.csv").open(newline="", encoding="utf-8") as f:
                people[s] = {r["participant"] for r in csv.DictReader(f)}
        assert not people["train"] & people["test"] and not people["val"] & people["test"]
        assert not people["train"] & people["val"]
    for s in ("train", "val", "test"):
        assert (out / "splits" / f"{s}.csv").exists()


def test_static_images_are_clips_and_folds_checked(tmp_path: Path) -> None:
    faces = (skimage.data.lfw_subset()[:3] * 255).astype(np.uint8)
    for k, f in enumerate(faces):
        _png(tmp_path / "raw" / "happy" / f"p1_{k:04d}.png", f)
    opts = ImportOptions(r"^(p\d+)_", cropped=True, static=True)
    assert [c.name for c in find_clips(tmp_path / "raw", opts).clips] == [
        "p1_0000", "p1_0001", "p1_0002"]  # fmt: skip
    params = load_params(_params(tmp_path, 32))
    with pytest.raises(InputError, match="--folds 1"):
        import_dataset(tmp_path / "raw", tmp_path / "out", params, opts, folds=1)
    rows = import_dataset(tmp_path / "raw", tmp_path / "out", params, opts)
    # min_face_frames: 3 (the default) cannot apply to one image: --static sets it to 1.
    assert params.faces.min_face_frames == 3
    assert [r["excluded"] for r in rows] == [""] * 3


def test_static_photos_with_detection_are_imported(tmp_path: Path) -> None:
    """The default params (min_face_frames: 3) used to exclude every image and exit 0."""
    _png(tmp_path / "raw" / "surprise" / "p1_astronaut.png", skimage.data.astronaut())
    _png(tmp_path / "raw" / "happiness" / "p2_grace.png", _grace())
    rows = import_dataset(tmp_path / "raw", tmp_path / "out", load_params(_params(tmp_path, 48)),
                          ImportOptions(r"^(p\d+)_", static=True))  # fmt: skip
    assert [(r["trial_id"], r["frames_decoded"], r["frames_with_face"], r["excluded"])
            for r in rows] == [("p2_grace", 1, 1, ""), ("p1_astronaut", 1, 1, "")]  # fmt: skip
    assert len(_rows(tmp_path / "out")) == 2


@pytest.mark.parametrize(
    ("n_frames", "cropped", "says"),
    [
        (2, True, "no clip has more than 2 frames, fewer than faces.min_face_frames (3): set "
                  "faces.min_face_frames: 2 in the params file"),
        (3, False, "no clip shows a face in enough frames: if the frames are already cropped "
                   "faces, add --cropped"),
    ],
)  # fmt: skip
def test_every_clip_excluded_fails_saying_why(tmp_path: Path, n_frames: int, cropped: bool,
                                              says: str) -> None:  # fmt: skip
    images = (_frames(skimage.data.coffee(), n_frames) if not cropped else
              list((skimage.data.lfw_subset()[:n_frames] * 255).astype(np.uint8)))  # fmt: skip
    for k, f in enumerate(images):
        _png(tmp_path / "raw" / "fear" / f"s1_seq_{k}.png", f)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"all 1 clips excluded, nothing imported") as err:
        import_dataset(tmp_path / "raw", out, load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(s\d+)_", cropped=cropped))  # fmt: skip
    assert says in str(err.value), str(err.value)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_too_few_subjects_for_folds_fail_before_any_face_work(tmp_path: Path) -> None:
    faces = (skimage.data.lfw_subset()[:4] * 255).astype(np.uint8)
    for k, f in enumerate(faces):
        _png(tmp_path / "raw" / "happy" / f"p{k % 2 + 1}_{k}.png", f)
    # Face work on this file would fail: the folds error must come first.
    (tmp_path / "raw" / "happy" / "p1_9.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"--folds 2: 2 participants cannot fill train/val/test"
                       r".*--subject-regex found 2 subjects: p1, p2\); nothing imported"):
        import_dataset(tmp_path / "raw", out, load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(p\d+)_", cropped=True, static=True), folds=2)
    assert not out.exists()
    with pytest.raises(InputError, match="cannot read as an image"):  # without folds: face work
        import_dataset(tmp_path / "raw", out, load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(p\d+)_", cropped=True, static=True))
