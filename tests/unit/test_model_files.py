"""A model file is data: one crafted to run code when unpickled is refused, and runs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emoflow.artifact import MODEL_FILE, load_model_file, load_state, read_spec
from emoflow.errors import InputError


class _Payload:
    """Unpickling this calls ``os.system`` (what a hostile model.pt would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "owned"
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save({"arch": "fan", "classes": ["a", "b"], "model_config": {}, "image_size": 64,
                "state_dict": {}, "preprocessing": _Payload(marker)},
               folder / MODEL_FILE)  # fmt: skip
    return folder, marker


def test_loading_a_crafted_model_file_runs_nothing(crafted: tuple[Path, Path]) -> None:
    folder, marker = crafted
    with pytest.raises(InputError, match="refused: holds more than tensors"):
        read_spec(folder)
    with pytest.raises(InputError, match="refused"):
        load_model_file(folder / MODEL_FILE)
    assert not marker.exists()


def test_predict_on_a_crafted_model_is_one_line_and_runs_nothing(
        crafted: tuple[Path, Path], tmp_path: Path) -> None:  # fmt: skip
    folder, marker = crafted
    out = subprocess.run([sys.executable, "-m", "emoflow.cli", "predict", str(tmp_path / "x.mp4"),
                          "--model-dir", str(folder)], capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "refused" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists()


def test_a_file_that_is_not_a_dict_is_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(InputError, match="not an emoflow checkpoint"):
        load_state(tmp_path / "t.pt")
