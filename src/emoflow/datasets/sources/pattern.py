"""Labels and subjects in the file names: ``--name-pattern`` with named groups.

RAVDESS's ``Actor_12/02-01-06-01-02-01-12.mp4`` (field 3 the emotion code, field 7 the actor),
JAFFE's ``KA.AN1.39.tiff``: the pattern is searched in each clip's path under the root and its
groups ``label`` and ``subject`` give both (a ``--label-map`` then maps codes to classes).
Clips are found anywhere below the root: videos; images grouped into clips as in a label
folder (a folder whose images form one group is a frame-folder clip); with ``--static`` every
image is a clip. Media the pattern does not match are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

from emoflow.datasets.sources.base import (
    Found,
    ReadOptions,
    SourceClip,
    compile_regex,
    ext,
    frame_prefix,
    listing,
    natural_key,
    no_clips,
)
from emoflow.errors import InputError


def _walk(root: Path, folder: Path, opts: ReadOptions, out: list[SourceClip],
          ignored: list[Path]) -> None:  # fmt: skip
    groups: dict[str, list[Path]] = {}
    for p in listing(folder):
        if p.is_dir():
            _walk(root, p, opts, out, ignored)
        elif ext(p) in opts.video_ext:
            out.append(SourceClip("", p.relative_to(root).as_posix(), "video", (p,)))
        elif ext(p) in opts.image_ext:
            groups.setdefault(p.name if opts.static else frame_prefix(p.stem), []).append(p)
        else:
            ignored.append(p)
    rel = folder.relative_to(root).as_posix()
    if len(groups) == 1 and folder != root and not opts.static:
        out.append(SourceClip("", rel, "folder", tuple(next(iter(groups.values())))))
        return
    for key in sorted(groups, key=natural_key):
        paths = groups[key]
        single = len(paths) == 1 and (opts.static or key == paths[0].stem)
        name = paths[0].relative_to(root).as_posix() if single else \
            f"{rel}/{key}".removeprefix("./")  # fmt: skip
        out.append(SourceClip("", name, "image" if single else "group", tuple(paths)))


def read_name_pattern(root: Path, pattern: str, opts: ReadOptions) -> Found:
    """Every clip below ``root`` whose path the pattern matches, labelled by its groups."""
    rx = compile_regex("--name-pattern", pattern, ("label", "subject"))
    if not root.is_dir():
        raise InputError(root, "dataset root is not a folder")
    found = Found()
    clips: list[SourceClip] = []
    _walk(root, root, opts, clips, found.ignored)
    for c in clips:
        m = rx.search(c.name)
        if m is None or not m["label"] or not m["subject"]:
            found.unmatched.append(c.where)
            continue
        found.clips.append(SourceClip(m["label"].lower(), c.name, c.kind, c.paths, m["subject"]))
    if not found.clips:
        if not clips:
            raise no_clips(root, opts, "files below the root")
        raise InputError(root, f"--name-pattern {pattern!r} matches none of the {len(clips)} "
                         f"clips found, e.g. {clips[0].name!r}")  # fmt: skip
    return found
