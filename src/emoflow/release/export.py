"""``emoflow export``: ``model.pt`` → ``model.onnx`` + ``export.json``, only when it agrees.

The exported graph is the inference core's clip graph (``emoflow.inference.graph``): uint8 face
images ``frames (clips, frames, H, W, C)`` and ``mask (clips, frames)`` in, clip
``probabilities`` and per-frame ``weights`` out, both batch axes dynamic.

Exporter: TorchScript (``dynamo=False``). It writes one self-contained file (the dynamo exporter
puts the weights in a separate ``.onnx.data``, one more file for DVC, the registry and the
service to keep together) and it traces FAN's masked frame selection (boolean indexing with a
data-dependent size) without the symbolic-shape work torch.export would need for it.

Parity: every clip of the test manifest, read as evaluation reads it, through ONNX Runtime and
through evaluation's own PyTorch ``predict``: the same class for every clip and probabilities
within ``tolerance`` (1e-4), else nothing is written and the figures are the error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoflow.artifact import EXPORT_JSON, ONNX_FILE, ModelSpec, read_spec
from emoflow.datasets.clips import ClipRef, read_manifest
from emoflow.errors import EmoflowError, InputError
from emoflow.faces.store import FaceClip
from emoflow.fsio import atomic_path, atomic_write_text, file_sha256
from emoflow.inference.backends import onnx_session
from emoflow.inference.graph import (
    EXPRESSION_INPUT,
    MIRROR_INPUT,
    OUTPUTS,
    clip_inputs,
    example_inputs,
    expression_dim,
    expression_kind,
    frame_features,
    input_names,
    load_clip_model,
    tta_flip,
)
from emoflow.models import registry

log = logging.getLogger(__name__)

OPSET = 20  # the current opset; Deep-Emotion's spatial transformer (GridSample) needs 16
OPSETS = {a.name: a.opsets for a in registry.ARCHITECTURES.values()}
TOLERANCE = 1e-4
BATCH = 16  # clips per ONNX Runtime call in the parity check (mixed lengths: padding too)


class ParityError(EmoflowError):
    """The exported graph does not compute what the PyTorch model computes."""


def read_model(model_dir: Path, arch: str | None = None) -> ModelSpec:
    """The folder's model; with ``arch``, refused unless ``model.pt`` holds that model (so
    ``--model deep_emotion --model-dir models/fan`` does not quietly export FAN)."""
    spec = read_spec(model_dir)
    if arch is not None and spec.arch != arch:
        raise InputError(spec.model_file, f"holds a {spec.arch} model, not {arch}: give "
                         f"--model {spec.arch}, or the folder of a {arch} model")  # fmt: skip
    return spec


def check_opset(arch: str, opset: int) -> None:
    """EmoflowError unless ``arch`` exports at ``opset`` (``OPSETS``)."""
    ok = OPSETS[arch]
    if opset not in ok:
        span = f"{ok.start}" if len(ok) == 1 else f"{ok.start} to {ok.stop - 1}"
        raise EmoflowError(f"--opset {opset}: {arch} exports at opset {span}")


def export_onnx(clip_model: torch.nn.Module, spec: ModelSpec, path: Path, opset: int = OPSET
                ) -> None:  # fmt: skip
    """Trace the clip graph into one ONNX file with dynamic clip and frame axes; an exporter
    failure is one EmoflowError line (its traceback stays on the exception's cause)."""
    import onnx

    check_opset(spec.arch, opset)
    dims = {"frames": {0: "clips", 1: "frames"}, "mask": {0: "clips", 1: "frames"},
            EXPRESSION_INPUT: {0: "clips", 1: "frames"}, MIRROR_INPUT: {0: "clips", 1: "frames"},
            "probabilities": {0: "clips"}, "weights": {0: "clips", 1: "frames"}}  # fmt: skip
    names = input_names(spec)
    dims = {k: v for k, v in dims.items() if k in (*names, *OUTPUTS)}
    try:
        with torch.no_grad(), warnings.catch_warnings(), _stdout_kept_back():
            # Tracing warns at the models' input checks (constant under a trace, as intended)
            # and the exporter at its own deprecations: noise in a stage's log.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(clip_model, example_inputs(spec), str(path), dynamo=False,
                              opset_version=opset, input_names=list(names),
                              output_names=list(OUTPUTS), dynamic_axes=dims)  # fmt: skip
        graph = onnx.load(str(path))
        if _positive_perms(graph):
            onnx.save(graph, str(path))
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # the exporter's many error types, with graph dumps in the text
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise EmoflowError(f"ONNX export of {spec.arch} at opset {opset} failed: {first}"
                           ) from exc  # fmt: skip


@contextlib.contextmanager
def _stdout_kept_back() -> Iterator[None]:
    """File descriptor 1 into a temp file while the exporter runs: on failure its C++ side
    prints the whole Torch IR graph (tens of KB) there, not in the exception."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _positive_perms(model: Any) -> bool:
    """The TorchScript exporter writes ``movedim``'s negative dims (``normalise``'s channels
    move) into Transpose ``perm`` as they are, which ONNX forbids: count them from the front."""
    changed = False
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Transpose" and attr.name == "perm" and min(attr.ints) < 0:
                n = len(attr.ints)
                attr.ints[:] = [p % n for p in attr.ints]
                changed = True
    return changed


def reference_probabilities(spec: ModelSpec, refs: list[ClipRef]) -> np.ndarray:
    """Evaluation's own numbers: the training task's ``predict`` on the CPU."""
    features = frame_features(spec)
    arch = registry.get(spec.arch)
    # What model.pt says; an expression FAN was trained by the cached-feature route.
    given = {"image_size": spec.image_size, "grayscale": spec.grayscale, "tta_flip": tta_flip(spec)}
    if features != "appearance":
        given |= {"features": features, "backbone_lr_scale": 0,
                  "backbone": spec.meta.config.get("backbone", "resnet18"),
                  "expression": expression_kind(spec)}
    task = arch.make_task(arch.params.model_validate(
        {k: v for k, v in given.items() if k in arch.params.model_fields}), 0)
    model = load_clip_model(spec).model
    if features != "appearance":
        model = task.prepare(model, torch.device("cpu"))
    return task.predict(model, refs, torch.device("cpu"), 0)


def run_clips(run: Any, refs: list[ClipRef], spec: ModelSpec) -> tuple[np.ndarray, list]:
    """``run(frames, mask[, expression])`` over the face files of ``refs``, ``BATCH`` clips at a
    time; probabilities (clips, K) and each clip's frame weights."""
    probs, weights = [], []
    for start in range(0, len(refs), BATCH):
        clips = []
        for r in refs[start : start + BATCH]:
            with FaceClip(r.path) as fc:
                clips.append(fc.frames(grayscale=spec.grayscale))
        p, w = run(*clip_inputs(clips, spec))
        probs.append(p)
        weights.extend(w[i, : len(c)] for i, c in enumerate(clips))
    return np.concatenate(probs), weights


def parity(onnx_path: Path, spec: ModelSpec, refs: list[ClipRef], tolerance: float
           ) -> dict[str, Any]:  # fmt: skip
    """Figures of ONNX Runtime against PyTorch on ``refs`` (see the module doc)."""
    session = onnx_session(onnx_path)
    names, kept = input_names(spec), {i.name for i in session.get_inputs()}

    def onnx_run(*arrays: np.ndarray) -> Any:
        return session.run(None, {k: a for k, a in zip(names, arrays, strict=True) if k in kept})

    got, got_w = run_clips(onnx_run, refs, spec)
    expected = reference_probabilities(spec, refs)
    clip_model = load_clip_model(spec)

    def torch_run(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            p, w = clip_model(*(torch.from_numpy(a) for a in arrays))
        return p.numpy(), w.numpy()

    _, want_w = run_clips(torch_run, refs, spec)
    differ = [r.trial_id for r, a, b in zip(refs, got.argmax(1), expected.argmax(1), strict=True)
              if a != b]  # fmt: skip
    return {
        "clips": len(refs), "reference": "emoflow evaluate's PyTorch predict (CPU, fp32)",
        "tolerance": tolerance, "max_abs_diff": float(np.abs(got - expected).max()),
        "weights_max_abs_diff": float(max(np.abs(a - b).max() for a, b in
                                          zip(got_w, want_w, strict=True))),
        "argmax_agree": len(refs) - len(differ), "argmax_differ": differ,
    }  # fmt: skip


def export_model(model_dir: Path, faces_dir: Path, splits_dir: Path, opset: int = OPSET,
                 tolerance: float = TOLERANCE, arch: str | None = None
                 ) -> dict[str, Any]:  # fmt: skip
    """Export, check parity on the test clips, then write model.onnx + export.json atomically.
    With ``arch``, the folder must hold that model."""
    spec = read_model(model_dir, arch)
    check_opset(spec.arch, opset)
    manifest = splits_dir / "test.csv"
    refs = read_manifest(manifest, faces_dir, spec.classes)
    if not refs:
        raise InputError(manifest, "no test clips to check the export on")
    with atomic_path(model_dir / ONNX_FILE) as tmp:
        export_onnx(load_clip_model(spec), spec, tmp, opset)
        figures = parity(tmp, spec, refs, tolerance)
        ok = figures["max_abs_diff"] <= tolerance and not figures["argmax_differ"]
        if not ok:
            raise ParityError(
                f"{model_dir}: ONNX parity failed on {figures['clips']} test clips: max |Δp| "
                f"{figures['max_abs_diff']:.3g} (tolerance {tolerance:g}), class differs on "
                f"{len(figures['argmax_differ'])} clip(s) {figures['argmax_differ'][:5]}; "
                f"{ONNX_FILE} not written")  # fmt: skip
        info = export_info(spec, opset, figures, tmp)
        atomic_write_text(model_dir / EXPORT_JSON, json.dumps(info, indent=1))
    log.info("export %s: %s (%.1f MB), parity on %d test clips: max |Δp| %.2g, class agrees on "
             "all, max |Δweight| %.2g", spec.arch, model_dir / ONNX_FILE,
             (model_dir / ONNX_FILE).stat().st_size / 1e6, figures["clips"],
             figures["max_abs_diff"], figures["weights_max_abs_diff"])  # fmt: skip
    return info


def export_info(spec: ModelSpec, opset: int, figures: dict[str, Any], onnx_path: Path
                ) -> dict[str, Any]:  # fmt: skip
    import onnxruntime

    s, c = spec.image_size, spec.channels
    return {
        "arch": spec.arch, "opset": opset, "exporter": "torch.onnx TorchScript (dynamo=False)",
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "inputs": {
            "frames": {"dtype": "uint8", "shape": ["clips", "frames", s, s, c],
                       "meaning": "aligned face images as the face files hold them (RGB, or "
                                  "gray when grayscale), resized to image_size; normalised "
                                  "inside the graph"},
            "mask": {"dtype": "bool", "shape": ["clips", "frames"],
                     "meaning": "True at real frames, False at padding"},
            **({EXPRESSION_INPUT: {
                "dtype": "float32", "shape": ["clips", "frames", expression_dim(spec)],
                "meaning": f"MediaPipe's {expression_kind(spec)} of each face image as stored "
                           "(the extractor outside this graph: emoflow.faces.blendshapes; "
                           "model.pt's backbone.expression); 0 at padding"}}
               if EXPRESSION_INPUT in input_names(spec) else {}),
            **({MIRROR_INPUT: {
                "dtype": "float32", "shape": ["clips", "frames", expression_dim(spec)],
                "meaning": "the same features of each face image's mirror image (test-time "
                           "flips, tta_flip)"}}
               if MIRROR_INPUT in input_names(spec) else {}),
        },
        "tta_flip": spec.meta.tta_flip,
        "frame_features": frame_features(spec),
        "outputs": {
            "probabilities": {"dtype": "float32", "shape": ["clips", len(spec.classes)]},
            "weights": {"dtype": "float32", "shape": ["clips", "frames"],
                        "meaning": "each frame's share of the decision (FAN: normalised α·β "
                                   "attention; Deep-Emotion: share of the winning class's mean "
                                   "probability); rows sum to 1"},
        },
        "classes": spec.classes, "image_size": s, "grayscale": spec.grayscale,
        "preprocessing": spec.preprocessing.model_dump(), "parity": figures,
        "source_sha256": file_sha256(spec.model_file), "onnx_sha256": file_sha256(onnx_path),
    }  # fmt: skip
