"""``emoflow import`` on each published shape, built here from real photographs.

Faces: skimage's ``lfw_subset`` (25×25 gray faces, taken as crops) where the shape is under
test, and matplotlib's Grace Hopper through the detector for CK+'s native tree. Every shape must
land on the same contract: face files, faces.csv (FACES_COLUMNS), classes.txt, splits.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from test_importer import _frames, _grace, _params, _png, _rows

from emoflow.config import load_params
from emoflow.datasets.importer import ImportOptions, import_dataset
from emoflow.errors import InputError
from emoflow.faces.store import FaceClip
from emoflow.media.video import MediaWriter

LFW = (skimage.data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # 25×25 gray faces


def _mp4(path: Path, faces: list[np.ndarray], side: int = 64) -> None:
    """A video of the given gray faces, enlarged to ``side`` (codecs want even sizes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with MediaWriter(path, fps=10, width=side, height=side, sample_rate=None) as w:
        for f in faces:
            w.write_frame(cv2.cvtColor(cv2.resize(f, (side, side)), cv2.COLOR_GRAY2BGR))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _set_of(out: Path, name: str) -> dict[str, set[str]]:
    sets = {}
    for s in ("train", "val", "test"):
        with (out / "splits" / name / f"{s}.csv").open(newline="", encoding="utf-8") as f:
            sets[s] = {r["trial_id"] for r in csv.DictReader(f)}
    return sets


@pytest.fixture()
def manifest_tree(tmp_path: Path) -> Path:
    """Videos, frame folders and single images of 6 subjects, listed in one TSV manifest."""
    data = tmp_path / "data"
    lines = ["path\tlabel\tsubject\tstart\tend\tpeak\tsplit"]
    split = {1: "train", 2: "train", 3: "train", 4: "train", 5: "val", 6: "test"}
    for s in range(1, 7):
        k = 12 * s
        _mp4(data / "videos" / f"s{s}.mp4", list(LFW[k : k + 6]))
        for i in range(3):
            _png(data / "frames" / f"s{s}_seq" / f"{i:03d}.png", LFW[k + 6 + i])
        _png(data / "stills" / f"s{s}.png", LFW[k + 9])
        lines += [f"videos/s{s}.mp4\tHappiness\tP{s}\t1\t4\t3\t{split[s]}",
                  f"frames/s{s}_seq\tsadness\tP{s}\t\t\t\t{split[s]}",
                  f"{data / 'stills' / f's{s}.png'}\tsurprise\tP{s}\t\t\t\t{split[s]}"]  # fmt: skip
    return _write(data / "list.tsv", "\n".join(lines) + "\n")


def test_manifest_reads_videos_segments_folders_and_images(manifest_tree: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "out"
    rows = import_dataset(None, out, load_params(_params(tmp_path, 32)),
                          ImportOptions(cropped=True), manifest=manifest_tree)  # fmt: skip
    assert len(rows) == 18 and not any(r["excluded"] for r in rows)
    by_id = _rows(out)
    seg, folder, still = by_id["P1_videos_s1_1-4"], by_id["P1_frames_s1_seq"], by_id["P1_stills_s1"]
    # frames 1..4 of the 6-frame video, its peak (frame 3) the third of them
    assert (seg["label"], seg["frames_decoded"], seg["selected"]) == ("happiness", "4", "0 1 2 3")
    assert seg["peak_position"] == "2"
    assert (folder["frames_decoded"], folder["selected"]) == ("3", "0 1 2")
    # a single image is a clip of one frame (min_face_frames is 3 for the others)
    assert (still["frames_decoded"], still["excluded"], still["participant"]) == ("1", "", "P1")
    with FaceClip(out / seg["file"]) as clip:
        assert clip.meta["segment"] == [1, 4] and len(clip) == 4
    assert (out / "classes.txt").read_text().split() == ["happiness", "sadness", "surprise"]
    # the manifest's own split, not a drawn one
    sets = _set_of(out, ".")
    assert {t[:2] for t in sets["val"]} == {"P5"} and {t[:2] for t in sets["test"]} == {"P6"}
    assert len(sets["train"]) == 12
    summary = json.loads((out / "import_summary.json").read_text())
    assert summary["classes"]["surprise"] == {"imported": 6, "excluded": 0}
    assert summary["subjects"]["P6"] == {"imported": 3, "excluded": 0}


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("videos/none.mp4\thappiness\tP1", "row 3: 'videos/none.mp4' does not exist"),
        ("videos/s1.mp4\thappiness\t", "row 3: subject is empty"),
        ("videos/s1.mp4\thappiness\tP1\t4\t2", r"row 3: end \(2\) is before start \(4\)"),
        ("videos/s1.mp4\thappiness\tP1\t1\t4\t5", r"row 3: peak \(5\) is outside"),
        ("videos/s1.mp4\thappiness\tP1\t-1", "row 3: start must be empty or a frame index"),
        ("list.tsv\thappiness\tP1", "row 3: 'list.tsv' is neither a video"),
        ("videos/s1.mp4\thappiness\tP1\t\t\t\tx", "row 3: 7 fields, the header has 6"),
    ],
)
def test_manifest_errors_name_the_row(manifest_tree: Path, tmp_path: Path, line: str,
                                      rule: str) -> None:  # fmt: skip
    rows = manifest_tree.read_text().splitlines()
    bad = _write(manifest_tree.with_name("bad.tsv"), "\n".join([rows[0].rsplit("\t", 1)[0],
                                                                rows[1].rsplit("\t", 1)[0], line]))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=rule) as err:
        import_dataset(None, out, load_params(_params(tmp_path, 32)), ImportOptions(cropped=True),
                       manifest=bad)  # fmt: skip
    assert err.value.path == bad
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_manifest_bad_split_and_missing_column(manifest_tree: Path, tmp_path: Path) -> None:
    params, opts = load_params(_params(tmp_path, 32)), ImportOptions(cropped=True)
    text = manifest_tree.read_text().replace("\tval\n", "\tvalidation\n", 1)
    bad = _write(manifest_tree.with_name("bad.tsv"), text)
    with pytest.raises(InputError, match=r"row \d+: split must be one of train, val, test; got "
                       "'validation'"):  # fmt: skip
        import_dataset(None, tmp_path / "out", params, opts, manifest=bad)
    _write(bad, "file\tlabel\tsubject\nvideos/s1.mp4\thappiness\tP1\n")
    with pytest.raises(InputError, match=r"row 1: missing columns \['path'\]"):
        import_dataset(None, tmp_path / "out", params, opts, manifest=bad)


RAVDESS = r"Actor_\d+/\d\d-\d\d-(?P<label>\d\d)-\d\d-\d\d-\d\d-(?P<subject>\d\d)\.mp4$"
RAVDESS_MAP = """\
# RAVDESS emotion codes -> the project's classes
"01": neutral
"02": drop        # calm: no such class
"03": happiness
"04": sadness
05: anger         # unquoted: YAML reads 5, which still matches "05"
"06": fear
"07": disgust
"08": surprise
"""


@pytest.fixture()
def ravdess_tree(tmp_path: Path) -> Path:
    """RAVDESS-style names: modality-channel-emotion-intensity-statement-repetition-actor."""
    root = tmp_path / "ravdess"
    for actor in range(1, 5):
        for n, emotion in enumerate((1, 2, 3, 5)):
            k = 20 * actor + 4 * n
            _mp4(root / f"Actor_{actor:02d}" / f"02-01-{emotion:02d}-01-01-01-{actor:02d}.mp4",
                 list(LFW[k : k + 3]))  # fmt: skip
    _write(root / "Actor_01" / "notes.txt", "not a clip")
    _mp4(root / "Actor_01" / "03-01-01-01-01-01-01.wav.mp4", list(LFW[:3]))  # does not match
    return root


def test_name_pattern_with_label_map(ravdess_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    label_map = _write(tmp_path / "ravdess.yaml", RAVDESS_MAP)
    import_dataset(ravdess_tree, out, load_params(_params(tmp_path, 32)),
                   ImportOptions(cropped=True, name_pattern=RAVDESS), label_map=label_map)
    rows = _rows(out)
    assert len(rows) == 12  # 16 clips, 4 calm ones dropped
    assert {r["label"] for r in rows.values()} == {"neutral", "happiness", "anger"}
    assert rows["01_Actor_01_02-01-05-01-01-01-01"]["label"] == "anger"
    assert {r["participant"] for r in rows.values()} == {"01", "02", "03", "04"}
    assert (out / "classes.txt").read_text().split() == ["anger", "happiness", "neutral"]
    summary = json.loads((out / "import_summary.json").read_text())
    assert summary["dropped_by_label_map"] == {"02": 4}
    assert (summary["files_ignored"], summary["files_unmatched"]) == (1, 1)


def test_unmapped_labels_are_listed_not_dropped(ravdess_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    label_map = _write(tmp_path / "partial.yaml", '"01": neutral\n"03": happiness\n')
    with pytest.raises(InputError, match=r"labels in the data that the map does not name: "
                       r"'02' \(4 clips\), '05' \(4 clips\)") as err:  # fmt: skip
        import_dataset(ravdess_tree, out, load_params(_params(tmp_path, 32)),
                       ImportOptions(cropped=True, name_pattern=RAVDESS), label_map=label_map)
    assert err.value.path == label_map and not out.exists()
    _write(label_map, '"01": neutral\n"02": calm\n')
    with pytest.raises(InputError, match=r"key '02'.*'calm', which is not one of the classes"):
        import_dataset(ravdess_tree, out, load_params(_params(tmp_path, 32)),
                       ImportOptions(cropped=True, name_pattern=RAVDESS), label_map=label_map)
    with pytest.raises(InputError, match=r"named group \(\?P<subject>"):
        import_dataset(ravdess_tree, out, load_params(_params(tmp_path, 32)),
                       ImportOptions(cropped=True, name_pattern=r"(?P<label>\d\d)"))


def test_name_pattern_static_images_jaffe(tmp_path: Path) -> None:
    """JAFFE: ``KA.AN1.39.tiff`` — subject, emotion and take in the name, all in one folder."""
    root = tmp_path / "jaffe"
    for i, (subject, code) in enumerate([("KA", "AN"), ("KA", "HA"), ("KL", "HA"), ("YM", "SU")]):
        _png(root / f"{subject}.{code}{i % 3 + 1}.{30 + i}.tiff", LFW[i])
    label_map = _write(tmp_path / "jaffe.yaml", "AN: anger\nHA: happiness\nSU: surprise\n")
    rows = import_dataset(root, tmp_path / "out", load_params(_params(tmp_path, 32)),
                          ImportOptions(cropped=True, static=True,
                                        name_pattern=r"^(?P<subject>[A-Z]{2})\.(?P<label>[A-Z]{2})"),
                          label_map=label_map)  # fmt: skip
    assert [(r["trial_id"], r["label"], r["frames_decoded"]) for r in rows] == [
        ("KA_AN1_30", "anger", 1), ("KA_HA2_31", "happiness", 1),
        ("KL_HA3_32", "happiness", 1), ("YM_SU1_33", "surprise", 1)]  # fmt: skip


def _ck_tree(root: Path) -> Path:
    """CK+ as shipped: three sequences, two with emotion files (codes written as floats)."""
    frames = _frames(_grace(), 4)
    for seq, (subject, n) in enumerate([("S005", "001"), ("S010", "002"), ("S011", "001")]):
        for i, f in enumerate(frames[: 3 + seq % 2], start=1):
            _png(root / "cohn-kanade-images" / subject / n / f"{subject}_{n}_{i:08d}.png", f)
    _write(root / "cohn-kanade-images" / "S005" / "001" / ".DS_Store", "")
    emotion = root / "Emotion"
    _write(emotion / "S005" / "001" / "S005_001_00000003_emotion.txt", "   5.0000000e+00\n")
    _write(emotion / "S010" / "002" / "S010_002_00000004_emotion.txt", "   2.0000000e+00\n")
    return root


def test_ckplus_native_layout(tmp_path: Path) -> None:
    root = _ck_tree(tmp_path / "CK+")
    out = tmp_path / "out"
    import_dataset(root, out, load_params(_params(tmp_path, 48)), ImportOptions(layout="ckplus"))
    rows = _rows(out)
    assert {t: (r["label"], r["participant"]) for t, r in rows.items()} == {
        "S005_001": ("happiness", "S005"), "S010_002": ("contempt", "S010")}  # fmt: skip
    for r, n in ((rows["S005_001"], 3), (rows["S010_002"], 4)):
        assert int(r["frames_with_face"]) == n and r["excluded"] == ""
        selected = [int(s) for s in r["selected"].split()]
        assert selected[-1] == n - 1 and int(r["peak_position"]) == len(selected) - 1  # apex
    summary = json.loads((out / "import_summary.json").read_text())
    assert summary["sequences_unlabelled"] == 1


def test_ckplus_bad_label_files(tmp_path: Path) -> None:
    root = _ck_tree(tmp_path / "CK+")
    params = load_params(_params(tmp_path, 48))
    bad = _write(root / "Emotion" / "S011" / "001" / "S011_001_00000003_emotion.txt", "9.0\n")
    with pytest.raises(InputError, match=r"_emotion.txt:line 1: an emotion file holds one code "
                       r"0-7; got '9.0'") as err:  # fmt: skip
        import_dataset(root, tmp_path / "out", params, ImportOptions(layout="ckplus"))
    assert err.value.path == bad
    bad.unlink()
    orphan = _write(root / "Emotion" / "S099" / "001" / "S099_001_00000003_emotion.txt", "1\n")
    with pytest.raises(InputError, match="labels sequence S099/001, which cohn-kanade-images/"):
        import_dataset(root, tmp_path / "out", params, ImportOptions(layout="ckplus"))
    orphan.unlink()
    (root / "Emotion").rename(root / "labels")
    with pytest.raises(InputError, match=r"CK\+:.*no Emotion/ folder"):
        import_dataset(root, tmp_path / "out", params, ImportOptions(layout="ckplus"))
    assert not (tmp_path / "out").exists()


@pytest.fixture()
def folders_tree(tmp_path: Path) -> Path:
    """Label folders of 6 subjects: frame folders, prefix groups and single images together."""
    root = tmp_path / "raw"
    for s in range(1, 7):
        k = 12 * s
        for i in range(3):
            _png(root / "fear" / f"p{s}_seq" / f"{i}.png", LFW[k + i])
            _png(root / "anger" / f"p{s}_take_{i}.png", LFW[k + 3 + i])
        _png(root / "anger" / f"p{s}_still.png", LFW[k + 6])  # no frame number: one image
    return root


def test_given_folds_by_subject(folders_tree: Path, tmp_path: Path) -> None:
    folds = _write(tmp_path / "folds.csv", "subject,fold\n" + "".join(
        f"p{s},{'ab'[s % 2]}\n" for s in range(1, 7)))  # fmt: skip
    out = tmp_path / "out"
    rows = import_dataset(folders_tree, out, load_params(_params(tmp_path, 32)),
                          ImportOptions(r"^(p\d+)_", cropped=True), folds_from=folds)
    assert len(rows) == 18 and not any(r["excluded"] for r in rows)
    assert {r["trial_id"] for r in rows if r["label"] == "anger"} >= {"p1_still", "p1_take"}
    fold_a, fold_b = _set_of(out, "folds/fold_0"), _set_of(out, "folds/fold_1")
    assert {t.split("_")[0] for t in fold_a["test"]} == {"p2", "p4", "p6"}  # fold "a"
    assert {t.split("_")[0] for t in fold_b["test"]} == {"p1", "p3", "p5"}
    for f in (fold_a, fold_b):
        assert not (f["train"] | f["val"]) & f["test"] and f["val"]
    with pytest.raises(InputError, match="lists 2 folds; --folds says 3"):
        import_dataset(folders_tree, out, load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(p\d+)_", cropped=True), folds=3, folds_from=folds)
    _write(folds, "subject,fold\np1,a\np2,b\n")
    with pytest.raises(InputError, match=r"12 of 18 clips are in no fold \(by subject\)"):
        import_dataset(folders_tree, tmp_path / "out2", load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(p\d+)_", cropped=True), folds_from=folds)
    _write(folds, "subject,fold\np1,a\np1,b\n")
    with pytest.raises(InputError, match=r"folds.csv:row 3: subject 'p1' is in fold a and fold b"):
        import_dataset(folders_tree, tmp_path / "out2", load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(p\d+)_", cropped=True), folds_from=folds)
    assert not (tmp_path / "out2").exists()


def test_cli_manifest_with_folds_by_path_and_error_exit(manifest_tree: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    folds = _write(manifest_tree.parent / "folds.tsv", "path\tfold\n" + "".join(
        f"{kind}\t{s % 3}\n" for s in range(1, 7)
        for kind in (f"videos/s{s}.mp4", f"frames/s{s}_seq", f"stills/s{s}.png")))  # fmt: skip
    out = tmp_path / "out"
    base = [sys.executable, "-m", "emoflow.cli", "import", "--out", str(out), "--cropped",
            "--params", str(_params(tmp_path, 32)), "--manifest", str(manifest_tree)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([*base, "--folds-from", str(folds)], capture_output=True, text=True,
                         env=env, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (out / "splits" / "folds").iterdir()) == [
        "fold_0", "fold_1", "fold_2"]  # fmt: skip
    assert {t.split("_")[0] for t in _set_of(out, "folds/fold_0")["test"]} == {"P3", "P6"}
    bad = _write(tmp_path / "map.yaml", "happiness: joy\n")
    run = subprocess.run([*base, "--label-map", str(bad)], capture_output=True, text=True,
                         env=env, check=False)  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {bad}:key 'happiness': maps to 'joy', which is not one of the classes (anger, "
        "disgust, fear, happiness, sadness, surprise, neutral) nor drop")
