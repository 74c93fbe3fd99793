"""CK+ as it ships: image sequences beside separate emotion files.

``<root>/cohn-kanade-images/S005/001/S005_001_00000001.png ...`` and
``<root>/Emotion/S005/001/S005_001_00000011_emotion.txt`` holding one numeric code (0–7,
written as a float, ``3.0000000e+00``). Only the sequences with an emotion file are labelled
(the others are counted and skipped); every sequence runs from neutral to its apex, so the
last frame is the peak.
"""

from __future__ import annotations

from pathlib import Path

from emoflow.datasets.sources.base import Found, ReadOptions, SourceClip, ext, listing
from emoflow.errors import InputError

IMAGES_DIR = "cohn-kanade-images"
EMOTION_DIR = "Emotion"
# CK+'s codes, named as the project's classes where they match ("happy" → "happiness").
CK_LABELS = ("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness",
             "surprise")  # fmt: skip


def read_code(path: Path) -> str:
    """The label an emotion file holds, or an error naming the file and what it holds."""
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value.is_integer() or not 0 <= value < len(CK_LABELS):
        raise InputError(path, f"an emotion file holds one code 0-{len(CK_LABELS) - 1}; "
                         f"got {text[:40]!r}", "line 1")  # fmt: skip
    return CK_LABELS[int(value)]


def _sequences(images: Path) -> list[tuple[str, Path]]:
    """``(subject, sequence folder)`` for every ``S005/001`` under cohn-kanade-images/."""
    return [(s.name, q) for s in listing(images) if s.is_dir() for q in listing(s) if q.is_dir()]


def read_ckplus(root: Path, opts: ReadOptions) -> Found:
    images, emotions = root / IMAGES_DIR, root / EMOTION_DIR
    for d in (images, emotions):
        if not d.is_dir():
            raise InputError(root, f"--layout ckplus: no {d.name}/ folder (CK+ ships "
                             f"{IMAGES_DIR}/ and {EMOTION_DIR}/ side by side)")  # fmt: skip
    found = Found()
    for subject, seq in _sequences(images):
        label_dir = emotions / subject / seq.name
        labels = sorted(label_dir.glob("*_emotion.txt")) if label_dir.is_dir() else []
        if len(labels) > 1:
            raise InputError(labels[1], f"a second emotion file for sequence {subject}/{seq.name}")
        frames = [p for p in listing(seq) if p.is_file() and ext(p) in opts.image_ext]
        found.ignored += [p for p in listing(seq) if p.is_file() and ext(p) not in opts.image_ext]
        if not labels:
            found.unlabelled += 1
            continue
        if not frames:
            raise InputError(labels[0], f"labels sequence {subject}/{seq.name}, which has no "
                             f"frame images in {seq}")  # fmt: skip
        found.clips.append(SourceClip(read_code(labels[0]), f"{subject}_{seq.name}", "folder",
                                      tuple(frames), subject, peak_last=True))  # fmt: skip
    for f in emotions.glob("*/*/*_emotion.txt"):  # a label whose images are missing
        if not (images / f.parent.parent.name / f.parent.name).is_dir():
            raise InputError(f, f"labels sequence {f.parent.parent.name}/{f.parent.name}, "
                             f"which {IMAGES_DIR}/ does not have")  # fmt: skip
    if not found.clips:
        raise InputError(emotions, f"no sequence of {IMAGES_DIR}/ has an emotion file "
                         f"(<subject>/<sequence>/*_emotion.txt)")  # fmt: skip
    return found
