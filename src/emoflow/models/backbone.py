"""Initialising a ResNet18 trunk from a local state-dict file (never a download).

Checkpoints in the wild wrap the same ResNet18 weights in different ways: torchvision's ImageNet
file is a bare state dict; the Emotion-FAN MS-Celeb-1M / FER+ files are
``{"state_dict": {"module.conv1.weight": ...}}`` (saved from ``DataParallel``); a model that holds
the trunk as an attribute prefixes its keys (``backbone.``, ``base.``, ``trunk.``). So the loader
unwraps, strips known prefixes, drops the classifier (``fc.*``: its class count is someone else's)
and loads non-strictly, but refuses a file that shares *no* weight with the trunk: that is almost
always the wrong file, and silently training from random weights would hide it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from emoflow.errors import InputError

log = logging.getLogger(__name__)

# Keys under which training scripts commonly nest the weights inside a checkpoint dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
# Attribute names a trunk commonly lives under; stripped repeatedly ("module.backbone.conv1...").
PREFIXES = ("module.", "model.", "backbone.", "base.", "trunk.", "resnet.", "encoder.")
IGNORED_PREFIXES = ("fc.",)


@dataclass(frozen=True)
class LoadReport:
    """What a state-dict load did: loaded keys, and the trunk/file keys that did not line up."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def strip_prefixes(key: str, prefixes: tuple[str, ...] = PREFIXES) -> str:
    """``key`` without any leading run of ``prefixes`` (``module.backbone.x`` → ``x``)."""
    stripped = True
    while stripped:
        stripped = False
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p) :]
                stripped = True
    return key


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from a training-script dict if need be.

    ``weights_only=True``: a checkpoint is data, and unpickling arbitrary objects from a file
    someone handed over would run their code.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "backbone weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean "not a usable file"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(path, f"cannot read as a PyTorch state dict ({reason})") from e
    for _ in range(3):  # {"state_dict": {"model": {...}}} is seen in the wild
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise InputError(path, f"expected a state dict (a mapping), got {type(obj).__name__}")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_trunk_weights(trunk: nn.Module, path: Path) -> LoadReport:
    """Load the weights in ``path`` that fit ``trunk`` (same name after stripping, same shape).

    Raises InputError naming the file when it cannot be read or when no trunk weight matched.
    """
    path = Path(path)
    source = read_state_dict(path)
    target = trunk.state_dict()
    loadable: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for raw_key, tensor in source.items():
        key = strip_prefixes(raw_key)
        if key.startswith(IGNORED_PREFIXES):
            continue
        if key not in target:
            unexpected.append(raw_key)
        elif target[key].shape != tensor.shape:
            mismatched.append(raw_key)
        else:
            loadable[key] = tensor
    # A counter alone (num_batches_tracked) is no evidence that the file belongs to this trunk.
    if not any(not k.endswith("num_batches_tracked") for k in loadable):
        raise InputError(
            path,
            f"no ResNet18 trunk weight matched ({len(source)} tensors in the file, "
            f"{len(mismatched)} with a matching name but another shape)",
        )
    result = trunk.load_state_dict(loadable, strict=False)
    report = LoadReport(path=path, loaded=sorted(loadable), missing=list(result.missing_keys),
                        unexpected=unexpected, mismatched=mismatched)  # fmt: skip
    log.info(
        "backbone %s: loaded %d tensors, %d trunk keys missing, %d unexpected, %d shape-mismatched",
        path, len(report.loaded), len(report.missing), len(report.unexpected),
        len(report.mismatched),
    )  # fmt: skip
    if report.missing:
        log.debug("backbone %s: missing %s", path, report.missing)
    if report.unexpected or report.mismatched:
        log.debug("backbone %s: unexpected %s, mismatched %s", path, report.unexpected,
                  report.mismatched)  # fmt: skip
    return report
