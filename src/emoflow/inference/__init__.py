"""The inference core shared by ``emoflow predict``, the service, ``promote`` and the benchmarks."""

from emoflow.inference.predictor import NoFaceError, Predictor
from emoflow.inference.schema import ClipResult, FrameResult, ModelRef, Timings

__all__ = ["ClipResult", "FrameResult", "ModelRef", "NoFaceError", "Predictor", "Timings"]
