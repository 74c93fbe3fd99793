"""The importer's face step: one clip (any shape) → a face file and its faces.csv row.

Runs in worker processes: everything it gets is picklable, and it writes only its own face
file (atomically), so clips can run in any process and a killed import loses no finished clip.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from emoflow.config import FacesParams
from emoflow.datasets.sources.base import IMAGE_EXTS, ReadOptions, SourceClip
from emoflow.errors import InputError
from emoflow.faces.pipeline import process_frames
from emoflow.faces.select import select_frames
from emoflow.faces.stage import faces_row
from emoflow.faces.store import SUFFIX, write_face_clip
from emoflow.media.formats import VIDEO_EXTS
from emoflow.media.video import iter_frames

# "The last frame" for select_frames, which snaps a peak to the nearest face frame: with a
# detector we do not know in advance which frames will have a face, nor a video's exact length.
LAST_FRAME = 2**40
_FEATURE_SIDE = 16  # side of the downscaled frames K-means compares in --cropped mode
# A face detector's box over the side of the region dlib's ``get_face_chip`` frames at padding 0
# (its mean-face template), measured with dlib's HOG detector and 68-point chips on skimage's
# astronaut (0.833) and matplotlib's Grace Hopper (0.822): a tight crop is a detector's box, and
# ``--crop-padding auto`` widens it to the framing of the chips ``emoflow faces`` cuts.
TEMPLATE_OVER_BOX = 0.828


@dataclass(frozen=True)
class ImportOptions:
    """How to read one dataset: the command line's choices, in one picklable object."""

    subject_regex: str = ""
    cropped: bool = False
    grayscale: bool = False
    peak: Literal["none", "last"] = "none"
    static: bool = False
    video_ext: tuple[str, ...] = VIDEO_EXTS
    image_ext: tuple[str, ...] = IMAGE_EXTS
    layout: str = "labels"  # labels | ckplus
    name_pattern: str = ""  # labels and subjects from file names (named groups)
    # --cropped: margin added on each side of a crop, as a fraction of its side; None = auto
    # (``auto_crop_padding`` of faces.padding, resolved before the import starts)
    crop_padding: float | None = None

    def read(self) -> ReadOptions:
        return ReadOptions(self.subject_regex, self.static, self.video_ext, self.image_ext)


def read_image(path: Path) -> np.ndarray:
    """One frame as 8-bit RGB, or 2-D gray when the file has one channel."""
    img = cv2.imread(str(path), cv2.IMREAD_ANYCOLOR)
    if img is None:
        raise InputError(path, "cannot read as an image")
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class _Frames:
    """A clip's frames ``[start, end]`` as they come (gray or RGB), remembering whether any
    was in colour."""

    def __init__(self, clip: SourceClip) -> None:
        self.clip = clip
        self.all_gray = True

    def __iter__(self) -> Iterator[np.ndarray]:
        c = self.clip
        stop = None if c.end is None else c.end + 1
        if c.kind == "video":
            self.all_gray = False
            with contextlib.closing(iter_frames(c.paths[0], rgb=True)) as frames:
                yield from islice(frames, c.start, stop)
            return
        for p in c.paths[c.start : stop]:
            img = read_image(p)
            self.all_gray &= img.ndim == 2
            yield img

    def rgb(self) -> Iterator[np.ndarray]:
        """For the detector, which wants three channels."""
        for f in self:
            yield cv2.cvtColor(f, cv2.COLOR_GRAY2RGB) if f.ndim == 2 else f


def _to_gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[:2] == (size, size):
        return img
    shrink = max(img.shape[:2]) > size
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else
                      cv2.INTER_CUBIC)  # fmt: skip


def auto_crop_padding(chip_padding: float) -> float:
    """The margin per side that frames a tight crop (a detector's box) like the chips of
    ``emoflow faces`` at ``faces.padding``: 0.121 at the default 0.25, never negative.

    dlib's descriptor sees a tight 48-px crop zero-padded by this margin 30–36 % closer to its
    aligned chip of the same face than the crop as it is (``tests/data/test_crop_framing.py``)."""
    return max(0.0, round((TEMPLATE_OVER_BOX * (1 + 2 * chip_padding) - 1) / 2, 3))


def pad_crop(img: np.ndarray, margin: float) -> np.ndarray:
    """``img`` with ``margin`` × its height (width) of black added above and below (left and
    right): black, as dlib's ``get_face_chip`` fills what lies outside a frame."""
    if margin <= 0:
        return img
    py, px = round(margin * img.shape[0]), round(margin * img.shape[1])
    return cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_CONSTANT, value=0)


def pixel_features(frames: list[np.ndarray]) -> np.ndarray:
    """Downscaled, contrast-normalised gray pixels: K-means's view of pre-cropped faces.

    There are no landmarks without a detector; small gray thumbnails still separate
    expressions (mouth and brows move) while ignoring noise and JPEG artefacts.
    """
    rows = []
    for f in frames:
        x = cv2.resize(_to_gray(f), (_FEATURE_SIDE, _FEATURE_SIDE),
                       interpolation=cv2.INTER_AREA).astype(np.float32).ravel()  # fmt: skip
        rows.append((x - x.mean()) / (x.std() + 1e-6))
    return np.stack(rows)


@dataclass
class _Result:
    """What either mode found in a clip; becomes a faces.csv row and a face file."""

    decoded: int
    with_face: int
    selected: list[int]
    faces: list[np.ndarray]
    sources: list[str]
    counts: Counter[str]
    gray_source: bool
    landmarks: list[Any] | None = None


def _detected(clip: SourceClip, params: FacesParams, peak: int | None) -> _Result:
    """The ``emoflow faces`` pipeline over the clip's frames."""
    frames = _Frames(clip)
    r = process_frames(frames.rgb(), params, peak)
    return _Result(r.frames_decoded, r.face_frames, r.selected, r.chips,
                   [r.sources[i] for i in r.selected], r.counts, frames.all_gray,
                   [np.round(r.points[i], 2).tolist() for i in r.selected])  # fmt: skip


def _cropped(clip: SourceClip, params: FacesParams, peak: int | None,
             margin: float) -> _Result:  # fmt: skip
    """Frames taken as faces (``margin`` added around each, :func:`pad_crop`); K-means on the
    crops' pixels when there are more than ``faces.frames``."""
    frames = _Frames(clip)
    imgs = list(frames)
    ids = list(range(len(imgs)))
    if peak is not None:
        peak = min(peak, len(imgs) - 1)
    selected = (select_frames(pixel_features(imgs), ids, params.frames, peak, params.seed)
                if imgs else [])  # fmt: skip
    faces = [_resize(pad_crop(imgs[i], margin), params.size) for i in selected]
    return _Result(len(imgs), len(imgs), selected, faces, ["cropped"] * len(selected),
                   Counter(), frames.all_gray)  # fmt: skip


def clip_peak(clip: SourceClip, opts: ImportOptions) -> int | None:
    """The peak as an index into the clip's frames (from ``start``), LAST_FRAME, or None."""
    if clip.peak is not None:
        return clip.peak - clip.start
    return LAST_FRAME if clip.peak_last or opts.peak == "last" else None


def import_clip(job: tuple[SourceClip, Path, FacesParams, ImportOptions]) -> dict[str, Any]:
    """Process one clip, write its face file under ``out_dir``; return its faces.csv row."""
    clip, out_dir, params, opts = job
    if clip.kind != "video" and len(clip.paths) == 1 and params.min_face_frames > 1:
        # One image can show a face in one frame at most: the clip's own ceiling, not a lower bar.
        params = params.model_copy(update={"min_face_frames": 1})
    peak = clip_peak(clip, opts)
    margin = opts.crop_padding or 0.0  # import_dataset resolves auto; a direct call means none
    r = _cropped(clip, params, peak, margin) if opts.cropped else _detected(clip, params, peak)
    row, peak_pos = faces_row(clip.trial_id, clip.subject, clip.label, r.decoded, r.with_face,
                              r.counts, r.selected, peak, params.min_face_frames)  # fmt: skip
    if row["excluded"]:
        return row
    gray = opts.grayscale or r.gray_source
    faces = [_to_gray(f) for f in r.faces] if gray else r.faces
    rel = Path(clip.label) / f"{clip.trial_id}{SUFFIX}"
    meta = {
        "trial_id": clip.trial_id, "participant": clip.subject, "label": clip.label,
        "source": str(clip.where), "frames": r.selected, "peak_position": peak_pos,
        "detectors": r.sources, "size": params.size, "padding": params.padding,
        "landmarks": r.landmarks, "imported": True, "cropped": opts.cropped, "grayscale": gray,
    }  # fmt: skip
    if clip.start or clip.end is not None:
        meta["segment"] = [clip.start, clip.end]  # frame indices of the source
    if opts.cropped:
        meta["padding"] = None  # the dataset's own crop, with this margin on each side:
        meta["crop_padding"] = margin
    (out_dir / clip.label).mkdir(parents=True, exist_ok=True)
    write_face_clip(out_dir / rel, faces, meta, params.jpeg_quality)
    row["file"] = rel.as_posix()
    return row
