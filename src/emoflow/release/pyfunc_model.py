"""A registry version as an MLflow pyfunc model, so MLflow's own tools can run it.

``mlflow.pyfunc.load_model("models:/emoflow-fan@champion").predict(["clip.mp4"])`` answers one
JSON clip result (``emoflow.inference.schema.ClipResult``, as ``emoflow predict --json`` prints
it) per video path. The model's files lie in the version's ``artifacts/`` folder in the
model-folder layout; the inference core does the work, this class only adapts it to pyfunc.

Logged as MLflow "models from code": ``register`` passes this file's path, MLflow stores the
file in the version and runs it at load time (``set_model`` below), so no pickled object is
shipped. Loading needs emoflow installed, as every emoflow model does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emoflow.artifact import MODEL_FILE
from emoflow.tracking.store import disable_telemetry

disable_telemetry()

from mlflow.models import set_model  # noqa: E402  (after opting out of telemetry)
from mlflow.pyfunc import PythonModel  # noqa: E402


class EmotionModel(PythonModel):
    """Video paths in, clip results (JSON) out, through ``emoflow.inference.Predictor``."""

    def load_context(self, context: Any) -> None:
        from emoflow.inference import Predictor

        self._predictor = Predictor.from_dir(Path(context.artifacts[MODEL_FILE]).parent)

    def predict(self, context: Any, model_input: list[str],
                params: dict[str, Any] | None = None) -> list[str]:  # fmt: skip
        return [self._predictor.predict_video(Path(p)).model_dump_json() for p in model_input]


set_model(EmotionModel())
