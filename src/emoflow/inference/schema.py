"""What a prediction returns: pydantic models shared by the CLI, the service and promote."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FrameResult(BaseModel):
    """One selected frame: where the face was and how much it weighed in the decision."""

    index: int = Field(description="frame index in the video (position in the list for faces)")
    time_s: float | None = Field(
        None, description="the frame's presentation time from the first frame (its timestamp; "
        "index / fps for frames without one); None when unknown")  # fmt: skip
    box: tuple[float, float, float, float] | None = Field(
        None, description="face box (x0, y0, x1, y1) in the original video's pixels"
    )
    detector: str | None = Field(None, description="hog, hog_clahe, cnn or tracked")
    weight: float = Field(description="share of the clip decision (the clip's weights sum to 1)")


class ModelRef(BaseModel):
    name: str
    version: str | None = None
    alias: str | None = None
    backend: str


class Timings(BaseModel):
    """Milliseconds per part of a prediction; ``total`` is their sum (or, in the service, the
    request's wall time)."""

    decode: float = 0.0
    faces: float = 0.0
    expression: float = Field(0.0, description="the blendshape extractor on the chips (models "
                              "on expression features; 0 for the others)")  # fmt: skip
    model: float = 0.0
    total: float = 0.0


class ClipResult(BaseModel):
    prediction_id: str | None = Field(
        None, description="the service's id of this answer (for POST /feedback); None elsewhere")
    label: str
    confidence: float
    probabilities: dict[str, float]
    frames: list[FrameResult]
    faces_found: int = Field(description="frames in which a face was found (or chips given)")
    frames_decoded: int
    faces_seen: int = Field(1, description="the most faces seen in one frame; one is analysed")
    face_choice: str | None = Field(
        None, description="which face is analysed when several are in view: 'largest' (the "
        "largest, surest face at each fresh detection, then that face while it stays)")  # fmt: skip
    warnings: list[str] = Field(
        default_factory=list, description="what makes the answer less certain than usual "
        "(a truncated file, several faces in view)")  # fmt: skip
    model: ModelRef
    timings_ms: Timings = Field(default_factory=Timings)
