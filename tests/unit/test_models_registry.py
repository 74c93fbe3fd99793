"""The registry of architectures is the one list of models: every consumer reads it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from emoflow.config import Params, TrainParams, model_names
from emoflow.models import registry


def test_every_list_of_models_is_the_registry() -> None:
    from emoflow.cli import MODELS
    from emoflow.orchestration import plan
    from emoflow.release.export import OPSETS
    from emoflow.release.registry import REGISTERED_NAMES

    assert registry.NAMES == model_names() == MODELS == plan.MODELS == ("fan", "deep_emotion")
    assert set(OPSETS) == set(REGISTERED_NAMES) == set(registry.NAMES)
    assert REGISTERED_NAMES == {"fan": "emoflow-fan", "deep_emotion": "emoflow-deep-emotion"}
    assert {n: type(getattr(TrainParams(), n)) for n in model_names()} == {
        a.name: a.params for a in registry.ARCHITECTURES.values()}


def test_kubeflow_takes_the_registry_s_models(capsys: pytest.CaptureFixture[str]) -> None:
    from emoflow.orchestration.kubeflow import main

    with pytest.raises(SystemExit):
        main(["--model", "resnet"])
    assert "(choose from 'fan', 'deep_emotion')" in capsys.readouterr().err


@pytest.mark.parametrize("name", registry.NAMES)
def test_an_entry_builds_its_task_and_its_clip_graph(name: str) -> None:
    arch = registry.get(name)
    train = Params().train
    task = arch.make_task(arch.section(train), seed=0)
    assert task.name == name and task.cfg is getattr(train, name)
    model = task.build(3).eval()
    assert type(model) is type(arch.build(3, **task.model_config()))
    s = task.cfg.image_size
    x = torch.rand(2, 4, 1 if getattr(task.cfg, "grayscale", False) else 3, s, s)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    with torch.no_grad():
        probs, weights = arch.forward()(model, x, mask)
    assert probs.shape == (2, 3) and weights.shape == (2, 4)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert bool((weights[1, 2:] == 0).all())  # padding gets no weight


def test_an_unknown_name_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; expected one of \['deep_emo"):
        registry.get("resnet")


def test_reading_the_list_imports_no_torch() -> None:
    code = "import sys, emoflow.models.registry as r; print(r.NAMES, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "('fan', 'deep_emotion') False"
