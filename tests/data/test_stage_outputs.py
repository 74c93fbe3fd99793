"""No stage destroys data: the real ``emoflow`` command on small real files, for every stage.

1. An output that is, contains or lies inside an input is refused before anything is touched.
2. A run that produces nothing keeps the old output that had rows (exit 2, one line).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from stage_cli import (
    TRIAL,
    TRIAL_ROW,
    assert_one_line_error,
    emoflow,
    write_clip,
    write_csv,
)

from emoflow.datasets.splits import MANIFEST_COLUMNS
from emoflow.faces.stage import CLIP_COLUMNS, FACES_COLUMNS
from emoflow.guards import RELATIONS
from emoflow.ingest.marks import FLAG_NAMES
from emoflow.ingest.segment import TRIALS_COLUMNS


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a scratch folder with its own MLflow store, outside every snapshot."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{cwd / 'mlflow.db'}")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``root``, by relative path."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}  # fmt: skip


MARKS_ROW = {"start": 1, "end": 6, "peak": 3, **dict.fromkeys(FLAG_NAMES, 0)}


@dataclass(frozen=True)
class Case:
    """One stage's command line; ``target`` is the input the bad outputs are placed against."""

    args: list[str]
    target: Path
    out_flag: str = "--out"


def _sample(root: Path) -> Case:
    # sample's only input is its params file; here it lies in the marks folder it replaces.
    params = root / "data" / "marks" / "params.yaml"
    params.parent.mkdir(parents=True)
    params.write_text(yaml.safe_dump({"sample": {"participants": 1, "trials_per_participant": 1}}))
    return Case(["sample", "-p", str(params)], params.parent)


def _segment(root: Path) -> Case:
    write_clip(root / "in" / "sessions" / "p001.mp4")
    protocol = write_csv(root / "proto" / "protocol.csv",
                    ("participant", "trial", "emotion", "stimulus"),
                    [{"participant": "p001", "trial": 1, "emotion": "anger", "stimulus": "a"}])
    return Case(["segment", "--sessions", str(root / "in" / "sessions"), "--protocol",
                 str(protocol)], root / "in" / "sessions")  # fmt: skip


def _validate_inputs(root: Path) -> tuple[Path, Path]:
    trials = write_csv(root / "trials" / "trials.csv", TRIALS_COLUMNS, [TRIAL_ROW])
    write_clip(root / "trials" / f"{TRIAL}.mp4")
    marks = root / "in" / "marks"
    marks.mkdir(parents=True)
    (marks / f"{TRIAL}.txt").write_text("1\t6\t3\t0\t0\t0\t0\t0\n")
    return trials, marks


def _validate(root: Path, out_flag: str) -> Case:
    trials, marks = _validate_inputs(root)
    other = "--report" if out_flag == "--out" else "--out"
    return Case(["validate", "--trials", str(trials), "--marks", str(marks), other,
                 str(root / "elsewhere")], marks, out_flag)  # fmt: skip


def _trim(root: Path) -> Case:
    valid = write_csv(root / "valid" / "valid_trials.csv", [*TRIALS_COLUMNS, *MARKS_ROW],
                 [TRIAL_ROW | MARKS_ROW])
    write_clip(root / "in" / "trials" / f"{TRIAL}.mp4")
    return Case(["trim", "--valid", str(valid), "--trials", str(root / "in" / "trials")],
                root / "in" / "trials")


def _faces(root: Path) -> Case:
    clips = write_csv(root / "in" / "clips" / "clips.csv", CLIP_COLUMNS,
                      [{"trial_id": TRIAL, "participant": "p001", "label": "anger", "peak": 2}])
    write_clip(root / "in" / "clips" / "anger" / f"{TRIAL}.mp4", audio=False)
    return Case(["faces", "--clips", str(clips)], clips)


def _split(root: Path, tiny_faces: Path) -> Case:
    shutil.copytree(tiny_faces / "faces", root / "in" / "faces")
    return Case(["split", "--faces", str(root / "in" / "faces" / "faces.csv")],
                root / "in" / "faces" / "faces.csv")


def _import(root: Path) -> Case:
    for k in range(2):
        img = np.full((32, 32), 60 + 40 * k, np.uint8)
        path = root / "in" / "dataset" / "happy" / f"s1_{k:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
    return Case(["import", str(root / "in" / "dataset"), "--subject-regex", r"^(s\d+)",
                 "--cropped"], root / "in" / "dataset")  # fmt: skip


def _train(root: Path, tiny_faces: Path) -> Case:
    shutil.copytree(tiny_faces, root / "in")
    return Case(["train", "-m", "deep_emotion", "--faces", str(root / "in" / "faces"),
                 "--splits", str(root / "in" / "splits")], root / "in" / "faces")  # fmt: skip


def _model_file(path: Path, classes: list[str]) -> None:
    """A real (untrained) Deep-Emotion model file in the trainer's format."""
    from emoflow.artifact import save_state
    from emoflow.config import Params
    from emoflow.training.tasks import make_task

    tp = Params().train
    task = make_task("deep_emotion", tp, 0)
    model = task.build(len(classes))
    save_state(path, {"arch": "deep_emotion", "classes": classes,
                     "model_config": task.model_config(), "state_dict": model.state_dict(),
                     "epoch": 1, "val": {"war": 0.0, "uar": 0.0, "macro_f1": 0.0, "loss": 1.0},
                     "image_size": task.cfg.image_size, "grayscale": True})  # fmt: skip


def _evaluate(root: Path, tiny_faces: Path, out_flag: str) -> Case:
    shutil.copytree(tiny_faces, root / "data")
    model_dir = root / "in" / "model"
    _model_file(model_dir / "model.pt", ["anger", "happiness", "surprise"])
    other = "--metrics" if out_flag == "--plots" else "--plots"
    return Case(["evaluate", "-m", "deep_emotion", "--faces", str(root / "data" / "faces"),
                 "--splits", str(root / "data" / "splits"), "--model-dir", str(model_dir), other,
                 str(root / "elsewhere" / ("m.json" if other == "--metrics" else "plots"))],
                model_dir, out_flag)  # fmt: skip


STAGES: dict[str, Callable[[Path, Path], Case]] = {
    "sample": lambda r, _: _sample(r),
    "segment": lambda r, _: _segment(r),
    "validate --out": lambda r, _: _validate(r, "--out"),
    "validate --report": lambda r, _: _validate(r, "--report"),
    "trim": lambda r, _: _trim(r),
    "faces": lambda r, _: _faces(r),
    "split": _split,
    "import": lambda r, _: _import(r),
    "train": _train,
    "evaluate --plots": lambda r, t: _evaluate(r, t, "--plots"),
    "evaluate --metrics": lambda r, t: _evaluate(r, t, "--metrics"),
}


def _bad_out(case: Case, relation: str) -> Path | None:
    if case.args[0] == "sample":  # --out is the data root; its marks folder holds the params
        return case.target.parent if relation == "contains" else None
    if relation == "is":
        return case.target
    if relation == "contains":
        return case.target.parent
    return None if case.target.is_file() else case.target / "sub"


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("stage", list(STAGES))
def test_output_overlapping_an_input_is_refused_before_anything_is_touched(
    stage: str, relation: str, tmp_path: Path, tiny_faces: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root = tmp_path / "w"
    case = STAGES[stage](root, tiny_faces)
    out = _bad_out(case, relation)
    if out is None:
        pytest.skip("sample's --out is a data root" if stage == "sample" else
                    f"an output cannot lie inside the file {case.target.name}")
    params = case.args[case.args.index("-p") + 1] if "-p" in case.args else None
    args = list(case.args)
    if params is None:
        params = str(tmp_path / "params.yaml")
        Path(params).write_text("{}\n")
        args += ["-p", params]
    before = _snapshot(tmp_path)
    code, err = emoflow(monkeypatch, capsys, *args, case.out_flag, str(out))
    line = assert_one_line_error(code, err, f"{relation} the input", str(out))
    assert "choose an output outside every input" in line
    assert _snapshot(tmp_path) == before  # nothing created, changed or removed


def test_a_symlinked_output_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    case = _segment(tmp_path / "w")
    (tmp_path / "params.yaml").write_text("{}\n")
    link = tmp_path / "link"
    link.symlink_to(case.target.parent, target_is_directory=True)  # out → the inputs' folder
    before = _snapshot(tmp_path / "w")
    code, err = emoflow(monkeypatch, capsys, *case.args, "-p", str(tmp_path / "params.yaml"),
                        "--out", str(link))  # fmt: skip
    assert_one_line_error(code, err, "contains the input sessions")
    assert _snapshot(tmp_path / "w") == before and link.is_symlink()


def test_overlapping_outputs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    trials, marks = _validate_inputs(tmp_path / "w")
    (tmp_path / "params.yaml").write_text("{}\n")
    code, err = emoflow(monkeypatch, capsys, "validate", "--trials", str(trials), "--marks",
                        str(marks), "--out", str(tmp_path / "v"), "--report",
                        str(tmp_path / "v"), "-p", str(tmp_path / "params.yaml"))  # fmt: skip
    assert_one_line_error(code, err, "outputs must not overlap")
    assert not (tmp_path / "v").exists()


# --- a run that produces nothing keeps the old output ------------------------------------


def _old_table(out: Path, name: str, columns: list[str] | tuple[str, ...], row: dict) -> None:
    write_csv(out / name, columns, [row])
    write_clip(out / "old_clip.mp4", frames=3, audio=False)


@dataclass(frozen=True)
class EmptyCase:
    args: list[str]
    out: Path
    params: dict


def _empty_segment(root: Path, _: Path) -> EmptyCase:
    case = _segment(root)
    write_clip(root / "wrong" / "p002.mp4")  # a wrong --sessions: another study's recording
    args = [a if a != str(case.target) else str(root / "wrong") for a in case.args]
    out = root / "out"
    _old_table(out, "trials.csv", TRIALS_COLUMNS, TRIAL_ROW)
    return EmptyCase(args, out, {"segment": {"on_mismatch": "skip"}})


def _empty_validate(root: Path, _: Path) -> EmptyCase:
    trials, marks = _validate_inputs(root)
    write_csv(trials, TRIALS_COLUMNS, [])  # trials.csv emptied
    out = root / "out"
    _old_table(out, "valid_trials.csv", [*TRIALS_COLUMNS, *MARKS_ROW], TRIAL_ROW | MARKS_ROW)
    write_csv(root / "report" / "summary.csv", ["verdict"], [{"verdict": "pass"}])
    return EmptyCase(["validate", "--trials", str(trials), "--marks", str(marks), "--report",
                      str(root / "report")], out, {})  # fmt: skip


def _empty_trim(root: Path, _: Path) -> EmptyCase:
    case = _trim(root)
    valid = Path(case.args[2])
    write_csv(valid, [*TRIALS_COLUMNS, *MARKS_ROW], [TRIAL_ROW | MARKS_ROW | {"other": 1}])
    out = root / "out"
    _old_table(out, "clips.csv", CLIP_COLUMNS,
               {"trial_id": "p009_001", "participant": "p009", "label": "fear", "peak": 1})
    return EmptyCase(case.args, out, {})


OLD_FACE_ROW = {"trial_id": "p009_001", "participant": "p009", "label": "fear",
                "file": "fear/p009_001.faces.zip", "selected": "0 1", "excluded": ""}  # fmt: skip


def _empty_faces(root: Path, _: Path) -> EmptyCase:
    case = _faces(root)  # grey frames: no face in any
    out = root / "out"
    _old_table(out, "faces.csv", FACES_COLUMNS, OLD_FACE_ROW)
    return EmptyCase(case.args, out, {"faces": {"workers": 1}})


def _empty_split(root: Path, tiny_faces: Path) -> EmptyCase:
    case = _split(root, tiny_faces)
    rows = list(csv.DictReader(case.target.open(newline="")))
    write_csv(case.target, FACES_COLUMNS, [r | {"excluded": "face in 0 of 6 frames"} for r in rows])
    out = root / "out"
    shutil.copytree(tiny_faces / "splits", out)
    return EmptyCase(case.args, out, {})


def _empty_import(root: Path, _: Path) -> EmptyCase:
    case = _import(root)  # one clip of 2 frames: fewer than faces.min_face_frames (3)
    out = root / "out"
    _old_table(out, "faces.csv", FACES_COLUMNS, OLD_FACE_ROW)
    return EmptyCase(case.args, out, {"faces": {"workers": 1}})


def _empty_train(root: Path, tiny_faces: Path) -> EmptyCase:
    case = _train(root, tiny_faces)
    write_csv(root / "in" / "splits" / "train.csv", MANIFEST_COLUMNS, [])
    out = root / "out"
    _model_file(out / "model.pt", ["anger", "happiness", "surprise"])
    return EmptyCase(case.args, out, {})


def _empty_evaluate(root: Path, tiny_faces: Path) -> EmptyCase:
    case = _evaluate(root, tiny_faces, "--plots")
    write_csv(root / "data" / "splits" / "test.csv", MANIFEST_COLUMNS, [])
    out = root / "out"
    write_csv(out / "report.json.csv", ["war"], [{"war": 0.5}])
    return EmptyCase(case.args, out, {})


EMPTY: dict[str, Callable[[Path, Path], EmptyCase]] = {
    "segment": _empty_segment,
    "validate": _empty_validate,
    "trim": _empty_trim,
    "faces": _empty_faces,
    "split": _empty_split,
    "import": _empty_import,
    "train": _empty_train,
    "evaluate": _empty_evaluate,
}


@pytest.mark.parametrize("stage", list(EMPTY))
def test_a_run_that_produces_nothing_keeps_the_old_output(
    stage: str, tmp_path: Path, tiny_faces: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """``sample`` is not here: it always renders at least one participant."""
    case = EMPTY[stage](tmp_path / "w", tiny_faces)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(case.params or {}))
    before = _snapshot(tmp_path)
    flag = "--plots" if stage == "evaluate" else "--out"
    code, err = emoflow(monkeypatch, capsys, *case.args, "-p", str(params), flag, str(case.out))
    assert_one_line_error(code, err)
    assert _snapshot(tmp_path) == before  # inputs and the old output, byte for byte


def test_segment_skip_with_a_wrong_sessions_folder_names_the_kept_table(
    tmp_path: Path, tiny_faces: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    case = _empty_segment(tmp_path / "w", tiny_faces)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(case.params))
    code, err = emoflow(monkeypatch, capsys, *case.args, "-p", str(params), "--out",
                        str(case.out))  # fmt: skip
    assert_one_line_error(code, err, "segment produced nothing", "p001", "no ",
                          "holds 1 row from an earlier run: kept it")
