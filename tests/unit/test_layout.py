"""The workspace layout is written once: dvc.yaml's stage paths, the CLI's defaults and
``emoflow.layout`` say the same thing, and a layout anchored elsewhere moves every path."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import typer
import yaml

from emoflow.artifact import CHECKPOINTS, CURVES, EXPORT_JSON, HISTORY, MODEL_FILE, ONNX_FILE
from emoflow.cli import app
from emoflow.layout import LAYOUT, Layout, fold_dir
from emoflow.training.evaluate import PLOT_FILES

ROOT = Path(__file__).resolve().parents[2]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))


def _stages() -> dict[str, dict]:
    """dvc.yaml's stages, ``foreach`` expanded (``train@fan``) with ``${item}`` substituted."""
    out = {}
    for name, stage in DVC["stages"].items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        for item in stage["foreach"]:
            text = yaml.safe_dump(stage["do"]).replace("${item}", item)
            out[f"{name}@{item}"] = yaml.safe_load(text)
    return out


def _paths(entries: list) -> list[Path]:
    return [Path(next(iter(e)) if isinstance(e, dict) else e) for e in entries or []]


def _outs(stage: dict) -> list[Path]:
    return _paths(stage.get("outs")) + _paths(stage.get("metrics")) + _paths(stage.get("plots"))


MODELS = DVC["stages"]["train"]["foreach"]


def _expected_outs(lay: Layout) -> dict[str, list[Path]]:
    outs = {
        "sample": [lay.sessions, lay.protocol, lay.marks, lay.sample_truth],
        "segment": [lay.trials],
        "validate": [lay.validated, lay.validation_report],
        "trim": [lay.clips],
        "faces": [lay.faces],
        "split": [lay.splits],
    }
    for m in MODELS:
        folder = lay.model_dir(m)
        outs[f"train@{m}"] = [folder / f for f in (MODEL_FILE, HISTORY, CURVES, CHECKPOINTS)]
        outs[f"evaluate@{m}"] = [*(lay.plots(m) / f for f in PLOT_FILES), lay.metrics(m)]
        outs[f"export@{m}"] = [folder / ONNX_FILE, folder / EXPORT_JSON]
    return outs


def test_every_stage_writes_where_the_layout_says() -> None:
    stages = _stages()
    expected = _expected_outs(LAYOUT)
    assert set(stages) == set(expected)
    for name, stage in stages.items():
        assert sorted(_outs(stage)) == sorted(expected[name]), name


def test_every_data_path_dvc_yaml_names_is_a_layout_path() -> None:
    known = {p for outs in _expected_outs(LAYOUT).values() for p in outs}
    known |= {LAYOUT.data, LAYOUT.trials_csv, LAYOUT.valid_trials, LAYOUT.clips_csv,
              LAYOUT.faces_csv, *(LAYOUT.manifest(s) for s in ("train", "val", "test")),
              LAYOUT.reviewed, *(LAYOUT.model_dir(m) for m in MODELS),
              *(LAYOUT.plots(m) for m in MODELS)}  # fmt: skip
    named = [p for stage in _stages().values() for p in _paths(stage.get("deps"))]
    named += _paths(DVC.get("metrics")) + _paths(DVC.get("plots"))
    named += [Path(v) for stage in _stages().values() for _, v in _options(stage["cmd"])]
    plots = {LAYOUT.plots(m) for m in MODELS}  # evaluate's files in them: DVC's plots
    strays = sorted({str(p) for p in named
                     if p.parts[0] != "src" and p not in known and p.parent not in plots})
    assert not strays, f"dvc.yaml names paths the layout does not: {strays}"


def _options(cmd: str) -> list[tuple[str, str]]:
    """``--flag value`` pairs of a stage's command, but ``--model`` (a name, not a path)."""
    words = shlex.split(cmd)
    return [(w, v) for w, v in itertools.pairwise(words)
            if w.startswith("--") and w != "--model"]  # fmt: skip


def test_the_stage_commands_pass_what_the_cli_defaults_to() -> None:
    """``dvc repro`` and a bare ``emoflow <stage>`` in the repository root do the same thing."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    checked = 0
    for name, stage in _stages().items():
        words = shlex.split(stage["cmd"])
        command = commands[words[1]]
        model = name.partition("@")[2]
        for flag, value in _options(stage["cmd"]):
            param = next(p for p in command.params if flag in getattr(p, "opts", ()))
            default = param.default
            if default is None:  # computed from --model, or trim's optional second source
                default = {"--out": LAYOUT.model_dir(model), "--model-dir": LAYOUT.model_dir(model),
                           "--metrics": LAYOUT.metrics(model), "--plots": LAYOUT.plots(model),
                           "--reviewed": LAYOUT.reviewed}[flag]  # fmt: skip
            assert Path(value) == Path(default), f"{name}: {flag} {value} vs default {default}"
            checked += 1
    assert checked > 20


def test_a_layout_anchored_elsewhere_moves_every_path(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    for name, outs in _expected_outs(lay).items():
        for p, rel in zip(outs, _expected_outs(LAYOUT)[name], strict=True):
            assert p == tmp_path / rel
    assert lay.promotion_report("fan") == tmp_path / "reports" / "promotion-fan.json"
    assert lay.retrain_report == tmp_path / "reports" / "retrain.json"
    assert lay.model_dir("fan", 2) == tmp_path / "models" / "fan" / "folds" / "fold_2"
    assert lay.plots("fan", 2) == tmp_path / "plots" / "fan" / "folds" / "fold_2"
    assert lay.metrics("fan", 2) == tmp_path / "metrics" / "fan_folds_fold_2.json"
    assert lay.cv_metrics("fan") == tmp_path / "metrics" / "fan_cv.json"
    assert fold_dir(lay.splits, None) == lay.splits
