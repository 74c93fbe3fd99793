"""The service's settings, read once from the environment (the 12-factor way containers use)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from emoflow.feedback.policy import Capture, KeepRules
from emoflow.inference.availability import BACKENDS
from emoflow.media.formats import MIME_TYPES, dotted
from emoflow.parallel import cpu_threads

ENV_PREFIX = "EMOFLOW_"
VIDEO_EXTENSIONS = dotted(MIME_TYPES)
# A default, not a limit: EMOFLOW_CPU_WORKERS may ask for more.
MAX_DEFAULT_CPU_WORKERS = 8


class ServiceSettings(BaseSettings):
    """``EMOFLOW_<FIELD>`` in upper case sets a field (``EMOFLOW_MAX_UPLOAD_MB=20``); an empty
    variable counts as unset. ``ServiceSettings()`` reads this process's environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True,
                                      extra="forbid", frozen=True)  # fmt: skip

    model_uri: str | None = Field(
        None, description="models:/emoflow-fan@champion; the registry is MLFLOW_TRACKING_URI's"
    )
    model_dir: Path | None = Field(None, description="a local model folder (offline use)")
    model_tag: str | None = Field(
        None, description="a model already in BentoML's store (what a built Bento carries)"
    )
    api_key: str | None = Field(None, repr=False, description="Bearer key; unset = open")
    backend: str = Field("auto", pattern=f"^({'|'.join(BACKENDS)})$")
    max_upload_mb: float = Field(50.0, gt=0)
    max_duration_s: float = Field(30.0, gt=0, description="by the decoded frames' timestamps")
    max_megapixels: float = Field(
        8.3, gt=0, description="largest frame (width × height) a video or face image may "
        "have; 8.3 = 3840×2160")  # fmt: skip
    timeout_s: float = Field(
        110.0, gt=0, description="a request's work stops after this (504 timeout); the "
        "server's own timeout is 30 s longer")  # fmt: skip
    max_faces: int = Field(64, ge=1, description="face crops one /predict_faces request may hold")
    reload_s: float = Field(30.0, ge=0, description="poll the alias every N s; 0 = never")
    cpu_workers: int = Field(
        default_factory=lambda: min(cpu_threads(), MAX_DEFAULT_CPU_WORKERS), ge=1,
        description="processes of the decode + faces service; default one per core this "
        f"process may use (its affinity mask), at most {MAX_DEFAULT_CPU_WORKERS}: each holds "
        "its own dlib, torch and MediaPipe (~1 GB), and a container sees the host's cores",
    )
    batching: bool = Field(True, description="adaptive batching of the model service")
    max_batch_size: int = Field(32, ge=2)
    max_latency_ms: int = Field(
        10_000, ge=1, description="batcher's latency goal; requests it expects to miss it are "
        "shed (503), so leave room for a cold start and a full batch on CPU")  # fmt: skip

    # What the service keeps of its answers: a privacy decision, off unless set (docs/feedback.md)
    capture: Capture = Field(
        "none", description="none; records (each answer's record, no pixels); clips (records, "
        "plus the uploaded clip when a keep rule matches)")  # fmt: skip
    capture_store: str | None = Field(
        None, description="a folder, or s3://bucket/prefix (credentials: AWS_* variables)")
    capture_s3_endpoint: str | None = Field(
        None, description="an S3-compatible store's URL, e.g. http://objectstore:8333")
    keep_below_confidence: float | None = Field(0.5, ge=0.0, le=1.0)
    keep_below_margin: float | None = Field(0.1, ge=0.0, le=1.0)
    keep_sample_rate: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_source(self) -> ServiceSettings:
        if self.model_uri and self.model_dir:
            raise ValueError("set EMOFLOW_MODEL_URI or EMOFLOW_MODEL_DIR, not both")
        if self.capture != "none" and not self.capture_store:
            raise ValueError(f"EMOFLOW_CAPTURE={self.capture} needs EMOFLOW_CAPTURE_STORE "
                             "(a folder or s3://bucket/prefix)")  # fmt: skip
        return self

    @property
    def keep_rules(self) -> KeepRules:
        return KeepRules(below_confidence=self.keep_below_confidence,
                         below_margin=self.keep_below_margin,
                         sample_rate=self.keep_sample_rate)  # fmt: skip

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)
