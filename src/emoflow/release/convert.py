"""``emoflow convert``: a TensorRT engine for this GPU from the exported model, checked against
ONNX Runtime on the test clips.

FP16 the way TensorRT 10.12+ wants it (10.12 deprecates weakly typed networks, 11 removes the
FP16 builder flag): the precision lives in the graph. The clip graph is exported once more with
the network in float16 and the numerically sensitive ends in float32 (``ClipModel(half=True)``),
and TensorRT builds a *strongly typed* network from that ONNX, keeping every tensor's type. FP32
engines build from ``model.onnx`` itself, with TF32 off.

An optimisation profile covers the clip batch (min/opt/max, default 1/16/64) and the frames per
clip (1 to ``--max-frames``, default 64: ``/predict_faces`` sends one clip of up to
``EMOFLOW_MAX_FACES`` crops, 64 by default; TensorRT tunes for the recorded ``faces.frames``).
A profile smaller than what the predictor sends is refused before any work: fewer clips than its
chunk (``Predictor.batch_size``) or fewer frames than ``faces.frames``. At run time the engine's
own profile is the limit (``emoflow.inference.trt``). ``engine.json`` records the TensorRT
version, the GPU and its compute capability (an engine runs only there), the profile as the
engine reports it and the parity figures:
argmax agreement ≥ 99 % and max |Δp| ≤ 1e-2 (fp16) / 1e-3 (fp32) against ONNX Runtime, else
nothing is written.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from emoflow.artifact import ENGINE_FILE, ENGINE_JSON, ONNX_FILE, ModelSpec
from emoflow.datasets.clips import ClipRef, read_manifest
from emoflow.errors import EmoflowError, InputError
from emoflow.fsio import atomic_path, atomic_write_text, file_sha256
from emoflow.inference.backends import onnx_problem, onnx_session
from emoflow.inference.graph import INPUTS, frame_features, load_clip_model
from emoflow.inference.trt import EngineRunner, import_tensorrt, machine
from emoflow.release.export import ParityError, export_onnx, read_model, run_clips

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
TOLERANCE = {"fp16": 1e-2, "fp32": 1e-3}
MIN_AGREEMENT = 0.99
WORKSPACE = 4 << 30
MAX_FRAMES = 64  # the service's default EMOFLOW_MAX_FACES: crops in one /predict_faces clip


def check_profile(spec: ModelSpec, batch: tuple[int, int, int], max_frames: int) -> None:
    """Refuse a profile the predictor's calls would not fit (see the module doc)."""
    from emoflow.inference.predictor import Predictor

    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise EmoflowError(f"clip batch profile must satisfy 1 ≤ min ≤ opt ≤ max, got {batch}")
    if hi < Predictor.batch_size:
        raise EmoflowError(f"--max-batch {hi} is smaller than the {Predictor.batch_size} clips "
                           f"the predictor sends per call: use --max-batch "
                           f"{Predictor.batch_size} or more")  # fmt: skip
    if max_frames < spec.preprocessing.frames:
        raise EmoflowError(f"--max-frames {max_frames} is smaller than the "
                           f"{spec.preprocessing.frames} frames a clip of this model has "
                           f"(faces.frames it was trained with)")  # fmt: skip


def engine_refusal(spec: ModelSpec) -> str | None:
    """Why this model cannot become an engine, or None: the engine's profile and bindings know
    frames and mask only, so a FAN on expression features is served by ONNX Runtime instead."""
    if frame_features(spec) == "appearance":
        return None
    return (f"{spec.folder}: a FAN on {frame_features(spec)} features takes an expression input "
            "that TensorRT conversion does not handle yet: serve it with the onnx or torch "
            "backend")  # fmt: skip


def convert_model(model_dir: Path, faces_dir: Path, splits_dir: Path, precision: str = "fp16",
                  batch: tuple[int, int, int] = (1, 16, 64), max_frames: int = MAX_FRAMES,
                  arch: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Build, check and write ``model.engine`` + ``engine.json`` (see the module doc); with
    ``arch``, the folder must hold that model."""
    if precision not in PRECISIONS:
        raise EmoflowError(f"unknown precision {precision!r}; expected fp16 or fp32")
    spec = read_model(model_dir, arch)
    refusal = engine_refusal(spec)
    if refusal:
        raise EmoflowError(refusal)
    check_profile(spec, batch, max_frames)
    trt = import_tensorrt()  # without TensorRT or a GPU, say so before any work
    problem = onnx_problem(spec)
    if problem:
        raise EmoflowError(problem)
    refs = read_manifest(splits_dir / "test.csv", faces_dir, spec.classes)
    if not refs:
        raise InputError(splits_dir / "test.csv", "no test clips to check the engine on")
    with tempfile.TemporaryDirectory() as tmp:
        source = spec.folder / ONNX_FILE
        if precision == "fp16":
            source = Path(tmp) / "model.fp16.onnx"
            export_onnx(load_clip_model(spec, half=True), spec, source)
        engine = build_engine(trt, source, spec, precision, batch, max_frames)
    figures, profile = engine_parity(engine, spec, refs, precision)
    info = {**machine(), "precision": precision, "strongly_typed": precision == "fp16",
            "profile": profile, "parity": figures, "source_sha256": file_sha256(spec.model_file),
            "onnx_sha256": file_sha256(spec.folder / ONNX_FILE)}  # fmt: skip
    with atomic_path(spec.folder / ENGINE_FILE) as tmp_engine:
        tmp_engine.write_bytes(engine)
        atomic_write_text(spec.folder / ENGINE_JSON, json.dumps(info, indent=1))
    log.info("convert %s: %s (%s, %.1f MB) for %s; parity on %d test clips: argmax agreement "
             "%.1f %%, max |Δp| %.2g", spec.arch, spec.folder / ENGINE_FILE, precision,
             len(engine) / 1e6, info["gpu"], figures["clips"], 100 * figures["argmax_agreement"],
             figures["max_abs_diff"])  # fmt: skip
    return info


def build_engine(trt: Any, onnx_path: Path, spec: ModelSpec, precision: str,
                 batch: tuple[int, int, int], max_frames: int = MAX_FRAMES) -> bytes:  # fmt: skip
    """A serialised engine from ``onnx_path`` with the clip-batch / frames profile (frames 1 to
    ``max_frames``, tuned for ``faces.frames``)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if precision == "fp16":  # the graph's own types; on TensorRT 11 this is the only mode
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EmoflowError(f"{onnx_path}: TensorRT cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32 (Ampere+ default to TF32)
    s, c, frames = spec.image_size, spec.channels, spec.preprocessing.frames
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch
    top = max(max_frames, frames)
    profile.set_shape(INPUTS[0], (lo, 1, s, s, c), (opt, frames, s, s, c), (hi, top, s, s, c))
    profile.set_shape(INPUTS[1], (lo, 1), (opt, frames), (hi, top))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EmoflowError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    return bytes(serialized)


def engine_parity(engine: bytes, spec: ModelSpec, refs: list[ClipRef], precision: str
                  ) -> tuple[dict[str, Any], dict[str, list[int]]]:  # fmt: skip
    """The engine against ONNX Runtime (fp32 ``model.onnx``) on the test clips; the figures
    and the profile as the engine reports it."""
    runner = EngineRunner(engine, "the new engine", spec.arch)
    session = onnx_session(spec.folder / ONNX_FILE)
    got, _ = run_clips(runner.run, refs, spec)
    want, _ = run_clips(lambda f, m: session.run(None, {"frames": f, "mask": m}), refs, spec)
    agree = float(np.mean(got.argmax(1) == want.argmax(1)))
    diff = float(np.abs(got - want).max())
    figures = {"clips": len(refs), "reference": "ONNX Runtime, model.onnx (fp32)",
               "argmax_agreement": agree, "max_abs_diff": diff,
               "tolerance": TOLERANCE[precision], "min_agreement": MIN_AGREEMENT}  # fmt: skip
    if agree < MIN_AGREEMENT or diff > TOLERANCE[precision]:
        raise ParityError(f"{spec.folder}: TensorRT {precision} engine disagrees with ONNX "
                          f"Runtime on {len(refs)} test clips: argmax agreement "
                          f"{100 * agree:.1f} % (needs {100 * MIN_AGREEMENT:.0f} %), max |Δp| "
                          f"{diff:.3g} (tolerance {TOLERANCE[precision]:g}); {ENGINE_FILE} not "
                          "written")  # fmt: skip
    return figures, runner.profile.as_json()
