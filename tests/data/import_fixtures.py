"""Tiny datasets in each published shape ``emoflow import`` reads, made from real photographs.

The tests build them, and so can you, to try each worked example of ``docs/importer.md``:

    .venv/bin/python tests/data/import_fixtures.py /tmp/shapes

Faces: skimage's ``lfw_subset`` (25×25 gray faces, imported with ``--cropped``) and
matplotlib's Grace Hopper (found by the detector) for CK+. No licensed dataset is copied: only
the shapes (folder layout, file names, label files) are theirs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from matplotlib import cbook

from emoflow.media.video import MediaWriter

LFW = (skimage.data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # 25×25 gray faces
CROPPED_PARAMS = "faces: {size: 32, workers: 1}\n"
DETECT_PARAMS = "faces: {size: 48, detect_scale: 1.0, cnn_fallback: false, workers: 1}\n"
RAVDESS_PATTERN = r"Actor_\d+/\d\d-\d\d-(?P<label>\d\d)-\d\d-\d\d-\d\d-(?P<subject>\d\d)\.mp4$"
RAVDESS_MAP = """\
# RAVDESS emotion codes -> the project's classes
"01": neutral
"02": drop        # calm: no such class
"03": happiness
"04": sadness
05: anger         # unquoted: YAML reads 5, which still matches "05"
"06": fear
"07": disgust
"08": surprise
"""
JAFFE_PATTERN = r"^(?P<subject>[A-Z]{2})\.(?P<label>[A-Z]{2})"
JAFFE_MAP = "AN: anger\nHA: happiness\nSU: surprise\nNE: neutral\n"


def png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def mp4(path: Path, faces: list[np.ndarray], side: int = 64) -> None:
    """A video of the given gray faces, enlarged to ``side`` (codecs want even sizes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with MediaWriter(path, fps=10, width=side, height=side, sample_rate=None) as w:
        for f in faces:
            w.write_frame(cv2.cvtColor(cv2.resize(f, (side, side)), cv2.COLOR_GRAY2BGR))


def grace_frames(n: int) -> list[np.ndarray]:
    """``n`` different frames of Grace Hopper's portrait: small shifts and brightness changes."""
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    out = []
    for k in range(n):
        f = np.roll(rgb, (k % 3 - 1, 2 * k), axis=(0, 1)).astype(np.float32)
        out.append(np.clip(f * (0.9 + 0.03 * k), 0, 255).astype(np.uint8))
    return out


def manifest_tree(data: Path) -> Path:
    """Videos (a segment of each), frame folders and single images of 6 subjects in one TSV,
    with the dataset's own train/val/test; returns the manifest."""
    lines = ["path\tlabel\tsubject\tstart\tend\tpeak\tsplit"]
    split = {1: "train", 2: "train", 3: "train", 4: "train", 5: "val", 6: "test"}
    for s in range(1, 7):
        k = 12 * s
        mp4(data / "videos" / f"s{s}.mp4", list(LFW[k : k + 6]))
        for i in range(3):
            png(data / "frames" / f"s{s}_seq" / f"{i:03d}.png", LFW[k + 6 + i])
        png(data / "stills" / f"s{s}.png", LFW[k + 9])
        lines += [f"videos/s{s}.mp4\tHappiness\tP{s}\t1\t4\t3\t{split[s]}",
                  f"frames/s{s}_seq\tsadness\tP{s}\t\t\t\t{split[s]}",
                  f"{data / 'stills' / f's{s}.png'}\tsurprise\tP{s}\t\t\t\t{split[s]}"]  # fmt: skip
    return write(data / "list.tsv", "\n".join(lines) + "\n")


def manifest_folds(manifest: Path) -> Path:
    """A fold list by clip path (3 folds of 2 subjects) beside the manifest."""
    return write(manifest.parent / "folds.tsv", "path\tfold\n" + "".join(
        f"{kind}\t{s % 3}\n" for s in range(1, 7)
        for kind in (f"videos/s{s}.mp4", f"frames/s{s}_seq", f"stills/s{s}.png")))  # fmt: skip


def ravdess_tree(root: Path) -> Path:
    """RAVDESS-style names: modality-channel-emotion-intensity-statement-repetition-actor."""
    for actor in range(1, 5):
        for n, emotion in enumerate((1, 2, 3, 5)):
            k = 20 * actor + 4 * n
            mp4(root / f"Actor_{actor:02d}" / f"02-01-{emotion:02d}-01-01-01-{actor:02d}.mp4",
                list(LFW[k : k + 3]))  # fmt: skip
    write(root / "Actor_01" / "notes.txt", "not a clip")
    mp4(root / "Actor_01" / "03-01-01-01-01-01-01.wav.mp4", list(LFW[:3]))  # does not match
    return root


def jaffe_tree(root: Path) -> Path:
    """JAFFE-style ``KA.AN1.39.tiff``: subject, emotion and take in the name, one folder."""
    for i, (subject, code) in enumerate([("KA", "AN"), ("KA", "HA"), ("KL", "HA"), ("YM", "SU")]):
        png(root / f"{subject}.{code}{i % 3 + 1}.{30 + i}.tiff", LFW[i])
    return root


def ckplus_tree(root: Path) -> Path:
    """CK+ as shipped: three sequences, two with emotion files (codes written as floats)."""
    frames = grace_frames(4)
    for seq, (subject, n) in enumerate([("S005", "001"), ("S010", "002"), ("S011", "001")]):
        for i, f in enumerate(frames[: 3 + seq % 2], start=1):
            png(root / "cohn-kanade-images" / subject / n / f"{subject}_{n}_{i:08d}.png", f)
    write(root / "cohn-kanade-images" / "S005" / "001" / ".DS_Store", "")
    emotion = root / "Emotion"
    write(emotion / "S005" / "001" / "S005_001_00000003_emotion.txt", "   5.0000000e+00\n")
    write(emotion / "S010" / "002" / "S010_002_00000004_emotion.txt", "   2.0000000e+00\n")
    return root


def folders_tree(root: Path) -> Path:
    """Label folders of 6 subjects: frame folders, prefix groups and single images together."""
    for s in range(1, 7):
        k = 12 * s
        for i in range(3):
            png(root / "fear" / f"p{s}_seq" / f"{i}.png", LFW[k + i])
            png(root / "anger" / f"p{s}_take_{i}.png", LFW[k + 3 + i])
        png(root / "anger" / f"p{s}_still.png", LFW[k + 6])  # no frame number: one image
    return root


def subject_folds(path: Path) -> Path:
    """Two given folds of the folder tree's subjects (odd and even)."""
    return write(path, "subject,fold\n" + "".join(f"p{s},{'ab'[s % 2]}\n" for s in range(1, 7)))


def main(base: Path) -> None:
    """Every shape under ``base``, with the params, label maps and fold lists of the docs."""
    write(base / "cropped.yaml", CROPPED_PARAMS)
    write(base / "detect.yaml", DETECT_PARAMS)
    manifest_folds(manifest_tree(base / "manifest"))
    ravdess_tree(base / "ravdess")
    write(base / "ravdess.yaml", RAVDESS_MAP)
    jaffe_tree(base / "jaffe")
    write(base / "jaffe.yaml", JAFFE_MAP)
    ckplus_tree(base / "ckplus")
    folders_tree(base / "folders")
    subject_folds(base / "folders-folds.csv")
    print(f"wrote the fixtures under {base}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "shapes"))
