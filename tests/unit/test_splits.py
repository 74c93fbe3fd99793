import csv
import json
import logging
from pathlib import Path

import pytest

from emoflow.config import EMOTIONS, SplitParams
from emoflow.datasets.splits import make_splits
from emoflow.errors import InputError


def _faces_csv(path: Path, participants: int = 10, per_label: int = 2) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "participant", "label", "file", "selected", "excluded"])
        for p in range(participants):
            for lab in EMOTIONS:
                for k in range(per_label):
                    tid = f"p{p:03d}_{lab}_{k}"
                    w.writerow([tid, f"p{p:03d}", lab, f"{lab}/{tid}.faces.zip", "3 9 15", ""])
        w.writerow(["p000_bad", "p000", "anger", "", "", "face in 0 of 50 frames"])
    return path


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_subject_split_keeps_every_participant_in_one_set(tmp_path: Path) -> None:
    out = tmp_path / "splits"
    make_splits(_faces_csv(tmp_path / "faces.csv"), out, SplitParams(folds=0))
    sets = {s: _read(out / f"{s}.csv") for s in ("train", "val", "test")}
    people = {s: {r["participant"] for r in rows} for s, rows in sets.items()}
    assert not (people["train"] & people["val"] or people["train"] & people["test"]
                or people["val"] & people["test"])  # fmt: skip
    assert [len(people[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert sum(len(v) for v in sets.values()) == 10 * 7 * 2  # the excluded clip is dropped
    for rows in sets.values():  # stratified: every label present in every set
        assert {r["label"] for r in rows} == set(EMOTIONS)


def test_splits_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    faces = _faces_csv(tmp_path / "faces.csv")
    make_splits(faces, tmp_path / "a", SplitParams(seed=1))
    make_splits(faces, tmp_path / "b", SplitParams(seed=1))
    make_splits(faces, tmp_path / "c", SplitParams(seed=2))
    a, b, c = ((tmp_path / x / "test.csv").read_text() for x in "abc")
    assert a == b
    assert a != c


def test_k_folds_test_each_participant_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "splits"
    make_splits(_faces_csv(tmp_path / "faces.csv"), out, SplitParams(folds=5))
    tested: list[str] = []
    for i in range(5):
        here = out / "folds" / f"fold_{i}"
        fold = {s: _read(here / f"{s}.csv") for s in ("train", "val", "test")}
        people = {s: {r["participant"] for r in v} for s, v in fold.items()}
        assert not (people["train"] & people["test"] or people["train"] & people["val"])
        tested += sorted(people["test"])
    assert sorted(tested) == [f"p{p:03d}" for p in range(10)]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["folds"]) == 5


def test_clip_split_warns_that_identities_leak(tmp_path: Path, caplog) -> None:
    out = tmp_path / "splits"
    with caplog.at_level(logging.WARNING):
        make_splits(_faces_csv(tmp_path / "faces.csv"), out, SplitParams(mode="clip", folds=0))
    assert "identities" in caplog.text or "same participants" in caplog.text
    train = {r["participant"] for r in _read(out / "train.csv")}
    test = {r["participant"] for r in _read(out / "test.csv")}
    assert train & test  # the leak the warning is about


def test_too_few_participants_is_a_clear_error(tmp_path: Path) -> None:
    faces = _faces_csv(tmp_path / "faces.csv", participants=2)
    with pytest.raises(InputError, match="2 participants cannot fill"):
        make_splits(faces, tmp_path / "o", SplitParams(folds=0))
    with pytest.raises(InputError, match="4 folds need at least 4 participants, found 3"):
        make_splits(_faces_csv(tmp_path / "f2.csv", participants=3), tmp_path / "o",
                    SplitParams(folds=4, val=0.0, train=0.8))  # fmt: skip
    assert not (tmp_path / "o").exists()
