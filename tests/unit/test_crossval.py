import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emoflow.cli import app


def test_crossval_trains_every_fold_and_summarises(tiny_faces: Path, tiny_params: Path,
                                                  tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    import yaml

    params = yaml.safe_load(tiny_params.read_text())
    params["split"]["folds"] = 2
    params["train"]["deep_emotion"]["epochs"] = 2
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = CliRunner().invoke(app, ["crossval", "--model", "deep_emotion", "--params", str(p),
                                      "--faces", str(tiny_faces / "faces"), "--splits",
                                      str(tiny_faces / "splits")])  # fmt: skip
    assert result.exit_code == 0, result.output
    folds = [json.loads(Path(f"metrics/deep_emotion_folds_fold_{k}.json").read_text())
             for k in (0, 1)]  # fmt: skip
    summary = json.loads(Path("metrics/deep_emotion_cv.json").read_text())
    assert summary["folds"] == 2
    wars = [f["war"] for f in folds]
    assert summary["war"]["mean"] == pytest.approx(sum(wars) / 2)
    assert summary["war"]["std"] == pytest.approx(abs(wars[0] - wars[1]) / 2)
    assert Path("models/deep_emotion/folds/fold_1/model.pt").exists()
