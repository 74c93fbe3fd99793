"""Readers of published dataset shapes; each reduces its shape to :class:`SourceClip` rows."""

from __future__ import annotations

from pathlib import Path

from emoflow.datasets.sources.base import Found, ReadOptions, SourceClip
from emoflow.errors import InputError

LAYOUTS = ("labels", "ckplus")

__all__ = ["LAYOUTS", "Found", "ReadOptions", "SourceClip", "read_source"]


def read_source(root: Path | None, opts: ReadOptions, *, layout: str = "labels",
                name_pattern: str = "", manifest: Path | None = None) -> Found:  # fmt: skip
    """The clips of one dataset, whichever shape it has (one shape per run)."""
    if layout not in LAYOUTS:
        raise InputError("--layout", f"{layout!r}: must be one of {', '.join(LAYOUTS)}")
    chosen = [n for n, on in (("--manifest", manifest is not None), ("--name-pattern",
              bool(name_pattern)), ("--layout ckplus", layout == "ckplus")) if on]  # fmt: skip
    if len(chosen) > 1:
        raise InputError(chosen[1], f"one dataset shape per import: {' and '.join(chosen)}")
    if manifest is not None:
        if root is not None:
            raise InputError(root, "--manifest lists the clips: give no dataset root with it")
        from emoflow.datasets.sources.manifest import read_manifest

        return read_manifest(manifest, opts)
    if root is None:
        raise InputError("import", "give a dataset root, or --manifest FILE")
    if name_pattern:
        from emoflow.datasets.sources.pattern import read_name_pattern

        return read_name_pattern(root, name_pattern, opts)
    if layout == "ckplus":
        from emoflow.datasets.sources.ckplus import read_ckplus

        return read_ckplus(root, opts)
    from emoflow.datasets.sources.folders import read_label_folders

    return read_label_folders(root, opts)
