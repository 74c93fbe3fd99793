"""``emoflow import`` on each published shape, built here from real photographs.

The fixtures (``import_fixtures.py``, also the docs' examples): skimage's ``lfw_subset``
(25×25 gray faces, taken as crops) where the shape is under test, and matplotlib's Grace Hopper
through the detector for CK+'s native tree. Every shape must land on the same contract: face
files, faces.csv (FACES_COLUMNS), classes.txt, splits.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from import_fixtures import (
    JAFFE_MAP,
    JAFFE_PATTERN,
    RAVDESS_MAP,
    RAVDESS_PATTERN,
    ckplus_tree,
    folders_tree,
    jaffe_tree,
    manifest_folds,
    manifest_tree,
    ravdess_tree,
    subject_folds,
    write,
)
from test_importer import _params, _rows

from emoflow.config import load_params
from emoflow.datasets.importer import ImportOptions, import_dataset
from emoflow.errors import InputError
from emoflow.faces.store import FaceClip


def _set_of(out: Path, name: str) -> dict[str, set[str]]:
    sets = {}
    for s in ("train", "val", "test"):
        with (out / "splits" / name / f"{s}.csv").open(newline="", encoding="utf-8") as f:
            sets[s] = {r["trial_id"] for r in csv.DictReader(f)}
    return sets


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    return manifest_tree(tmp_path / "data")


def test_manifest_reads_videos_segments_folders_and_images(manifest: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "out"
    rows = import_dataset(None, out, load_params(_params(tmp_path, 32)),
                          ImportOptions(cropped=True), manifest=manifest)  # fmt: skip
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
def test_manifest_errors_name_the_row(manifest: Path, tmp_path: Path, line: str,
                                      rule: str) -> None:  # fmt: skip
    rows = manifest.read_text().splitlines()
    bad = write(manifest.with_name("bad.tsv"), "\n".join([rows[0].rsplit("\t", 1)[0],
                                                                rows[1].rsplit("\t", 1)[0], line]))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=rule) as err:
        import_dataset(None, out, load_params(_params(tmp_path, 32)), ImportOptions(cropped=True),
                       manifest=bad)  # fmt: skip
    assert err.value.path == bad
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_manifest_bad_split_and_missing_column(manifest: Path, tmp_path: Path) -> None:
    params, opts = load_params(_params(tmp_path, 32)), ImportOptions(cropped=True)
    text = manifest.read_text().replace("\tval\n", "\tvalidation\n", 1)
    bad = write(manifest.with_name("bad.tsv"), text)
    with pytest.raises(InputError, match=r"row \d+: split must be one of train, val, test; got "
                       "'validation'"):  # fmt: skip
        import_dataset(None, tmp_path / "out", params, opts, manifest=bad)
    write(bad, "file\tlabel\tsubject\nvideos/s1.mp4\thappiness\tP1\n")
    with pytest.raises(InputError, match=r"row 1: missing columns \['path'\]"):
        import_dataset(None, tmp_path / "out", params, opts, manifest=bad)


@pytest.fixture()
def ravdess(tmp_path: Path) -> Path:
    return ravdess_tree(tmp_path / "ravdess")


def test_name_pattern_with_label_map(ravdess: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    label_map = write(tmp_path / "ravdess.yaml", RAVDESS_MAP)
    import_dataset(ravdess, out, load_params(_params(tmp_path, 32)),
                   ImportOptions(cropped=True, name_pattern=RAVDESS_PATTERN), label_map=label_map)
    rows = _rows(out)
    assert len(rows) == 12  # 16 clips, 4 calm ones dropped
    assert {r["label"] for r in rows.values()} == {"neutral", "happiness", "anger"}
    assert rows["01_Actor_01_02-01-05-01-01-01-01"]["label"] == "anger"
    assert {r["participant"] for r in rows.values()} == {"01", "02", "03", "04"}
    assert (out / "classes.txt").read_text().split() == ["anger", "happiness", "neutral"]
    summary = json.loads((out / "import_summary.json").read_text())
    assert summary["dropped_by_label_map"] == {"02": 4}
    assert (summary["files_ignored"], summary["files_unmatched"]) == (1, 1)


def test_unmapped_labels_are_listed_not_dropped(ravdess: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    label_map = write(tmp_path / "partial.yaml", '"01": neutral\n"03": happiness\n')
    with pytest.raises(InputError, match=r"labels in the data that the map does not name: "
                       r"'02' \(4 clips\), '05' \(4 clips\)") as err:  # fmt: skip
        import_dataset(ravdess, out, load_params(_params(tmp_path, 32)),
                       ImportOptions(cropped=True, name_pattern=RAVDESS_PATTERN),
                       label_map=label_map)  # fmt: skip
    assert err.value.path == label_map and not out.exists()
    write(label_map, '"01": neutral\n"02": calm\n')
    with pytest.raises(InputError, match=r"key '02'.*'calm', which is not one of the classes"):
        import_dataset(ravdess, out, load_params(_params(tmp_path, 32)),
                       ImportOptions(cropped=True, name_pattern=RAVDESS_PATTERN),
                       label_map=label_map)  # fmt: skip
    with pytest.raises(InputError, match=r"named group \(\?P<subject>"):
        import_dataset(ravdess, out, load_params(_params(tmp_path, 32)),
                       ImportOptions(cropped=True, name_pattern=r"(?P<label>\d\d)"))


def test_name_pattern_static_images_jaffe(tmp_path: Path) -> None:
    """JAFFE: ``KA.AN1.39.tiff`` — subject, emotion and take in the name, all in one folder."""
    root = jaffe_tree(tmp_path / "jaffe")
    label_map = write(tmp_path / "jaffe.yaml", JAFFE_MAP)
    rows = import_dataset(root, tmp_path / "out", load_params(_params(tmp_path, 32)),
                          ImportOptions(cropped=True, static=True,
                                        name_pattern=JAFFE_PATTERN),
                          label_map=label_map)  # fmt: skip
    assert [(r["trial_id"], r["label"], r["frames_decoded"]) for r in rows] == [
        ("KA_AN1_30", "anger", 1), ("KA_HA2_31", "happiness", 1),
        ("KL_HA3_32", "happiness", 1), ("YM_SU1_33", "surprise", 1)]  # fmt: skip


def test_ckplus_native_layout(tmp_path: Path) -> None:
    root = ckplus_tree(tmp_path / "CK+")
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
    root = ckplus_tree(tmp_path / "CK+")
    params = load_params(_params(tmp_path, 48))
    bad = write(root / "Emotion" / "S011" / "001" / "S011_001_00000003_emotion.txt", "9.0\n")
    with pytest.raises(InputError, match=r"_emotion.txt:line 1: an emotion file holds one code "
                       r"0-7; got '9.0'") as err:  # fmt: skip
        import_dataset(root, tmp_path / "out", params, ImportOptions(layout="ckplus"))
    assert err.value.path == bad
    bad.unlink()
    orphan = write(root / "Emotion" / "S099" / "001" / "S099_001_00000003_emotion.txt", "1\n")
    with pytest.raises(InputError, match="labels sequence S099/001, which cohn-kanade-images/"):
        import_dataset(root, tmp_path / "out", params, ImportOptions(layout="ckplus"))
    orphan.unlink()
    (root / "Emotion").rename(root / "labels")
    with pytest.raises(InputError, match=r"CK\+:.*no Emotion/ folder"):
        import_dataset(root, tmp_path / "out", params, ImportOptions(layout="ckplus"))
    assert not (tmp_path / "out").exists()


@pytest.fixture()
def folders(tmp_path: Path) -> Path:
    return folders_tree(tmp_path / "raw")


def test_given_folds_by_subject(folders: Path, tmp_path: Path) -> None:
    folds = subject_folds(tmp_path / "folds.csv")
    out = tmp_path / "out"
    rows = import_dataset(folders, out, load_params(_params(tmp_path, 32)),
                          ImportOptions(r"^(p\d+)_", cropped=True), folds_from=folds)
    assert len(rows) == 18 and not any(r["excluded"] for r in rows)
    assert {r["trial_id"] for r in rows if r["label"] == "anger"} >= {"p1_still", "p1_take"}
    fold_a, fold_b = _set_of(out, "folds/fold_0"), _set_of(out, "folds/fold_1")
    assert {t.split("_")[0] for t in fold_a["test"]} == {"p2", "p4", "p6"}  # fold "a"
    assert {t.split("_")[0] for t in fold_b["test"]} == {"p1", "p3", "p5"}
    for f in (fold_a, fold_b):
        assert not (f["train"] | f["val"]) & f["test"] and f["val"]
    with pytest.raises(InputError, match="lists 2 folds; --folds says 3"):
        import_dataset(folders, out, load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(p\d+)_", cropped=True), folds=3, folds_from=folds)
    write(folds, "subject,fold\np1,a\np2,b\n")
    with pytest.raises(InputError, match=r"12 of 18 clips are in no fold \(by subject\)"):
        import_dataset(folders, tmp_path / "out2", load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(p\d+)_", cropped=True), folds_from=folds)
    write(folds, "subject,fold\np1,a\np1,b\n")
    with pytest.raises(InputError, match=r"folds.csv:row 3: subject 'p1' is in fold a and fold b"):
        import_dataset(folders, tmp_path / "out2", load_params(_params(tmp_path, 32)),
                       ImportOptions(r"^(p\d+)_", cropped=True), folds_from=folds)
    assert not (tmp_path / "out2").exists()


def test_cli_manifest_with_folds_by_path_and_error_exit(manifest: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:  # fmt: skip
    from emoflow.cli import run

    folds = manifest_folds(manifest)
    out = tmp_path / "out"
    argv = ["emoflow", "import", "--out", str(out), "--cropped", "--params",
            str(_params(tmp_path, 32)), "--manifest", str(manifest)]  # fmt: skip
    # The real entry point in this process (a subprocess would only add its start-up time).
    monkeypatch.setattr(sys, "argv", [*argv, "--folds-from", str(folds)])
    with pytest.raises(SystemExit) as done:
        run()
    assert done.value.code == 0
    assert sorted(p.name for p in (out / "splits" / "folds").iterdir()) == [
        "fold_0", "fold_1", "fold_2"]  # fmt: skip
    assert {t.split("_")[0] for t in _set_of(out, "folds/fold_0")["test"]} == {"P3", "P6"}
    bad = write(tmp_path / "map.yaml", "happiness: joy\n")
    monkeypatch.setattr(sys, "argv", [*argv, "--label-map", str(bad)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as failed:
        run()
    assert failed.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {bad}:key 'happiness': maps to 'joy', which is not one of the classes (anger, "
        "disgust, fear, happiness, sadness, surprise, neutral) nor drop")
