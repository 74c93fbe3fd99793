"""Face-pretrained weights converted once from a file an installed package ships, and cached.

The cache folder is ``$EMOFLOW_WEIGHTS_CACHE``, else ``$XDG_CACHE_HOME/emoflow/weights``
(``~/.cache``). A conversion is keyed by its source file's content, written atomically and read
back with ``weights_only=True`` (it is data); a damaged cache file converts anew.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from emoflow.fsio import atomic_path, file_sha256

log = logging.getLogger(__name__)

CACHE_ENV = "EMOFLOW_WEIGHTS_CACHE"


def default_cache_dir() -> Path:
    """``$EMOFLOW_WEIGHTS_CACHE``, else ``$XDG_CACHE_HOME/emoflow/weights`` (``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emoflow" / "weights"


def converted(name: str, source: Path, convert: Callable[[], dict[str, Tensor]],
              cache_dir: Path | None = None) -> dict[str, Tensor]:  # fmt: skip
    """``convert()``'s state dict for ``source``, cached as ``<cache>/<name>-<sha256, 16 hex>.pt``.

    A conversion builds a network, whose random init would shift the caller's torch RNG: a
    model built after it would start elsewhere on a cold cache than on a warm one (FAN's heads
    did: 0.720 against 0.880 on the sample). It runs on a forked RNG.
    """
    cached = (cache_dir or default_cache_dir()) / f"{name}-{file_sha256(source)[:16]}.pt"
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged cache file is rebuilt, not fatal
            log.warning("%s: unreadable (%s); converting %s again", cached, e, source)
    with torch.random.fork_rng(devices=[]):
        state = convert()
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        torch.save(state, tmp)
    log.info("converted %s → %s", source, cached)
    return state
