"""TensorRT engines: what the machine has, and the backend that runs one.

TensorRT is imported only here and only when asked for. An engine is tied to the GPU model and
the TensorRT version it was built with (``engine.json`` records both): any other pairing is
refused with a message to rebuild, before TensorRT is handed bytes it cannot read.

The runner takes its limits from the engine itself (``get_tensor_profile_shape``): a batch of
more clips than the optimisation profile's max is split, fewer than its min padded with masked
stand-ins (their rows dropped), and a clip of more frames than the profile takes is refused
with the command that builds a larger one. ``set_input_shape`` is checked every call: outside
the profile TensorRT keeps the previous shapes and would return results for another batch.

It runs on a stream of its own, ordered after the caller's current stream, never on torch's
legacy default stream. One lock serialises the calls (an execution context holds the shapes
and addresses of one call: the service calls from several threads), and the context's
activation memory comes from PyTorch's caching allocator for each call's shapes
(``USER_MANAGED``), so an engine swapped in beside a serving one adds its weights, not a
second max-profile activation pool.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from emoflow.artifact import ENGINE_FILE, ENGINE_JSON, ModelSpec, read_json
from emoflow.errors import EmoflowError
from emoflow.fsio import file_sha256
from emoflow.inference.availability import INSTALL_HINT
from emoflow.inference.graph import INPUTS, OUTPUTS

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or an EmoflowError naming what is missing and how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise EmoflowError(f"TensorRT is not installed ({exc}): {INSTALL_HINT}") from None
    if not torch.cuda.is_available():
        raise EmoflowError(f"no CUDA GPU visible to PyTorch: TensorRT needs one ({INSTALL_HINT})")
    return tensorrt


def machine() -> dict[str, Any]:
    """What an engine is tied to: this GPU and this TensorRT."""
    trt = import_tensorrt()
    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(),
            "compute_capability": f"{major}.{minor}"}  # fmt: skip


def unusable(spec: ModelSpec) -> str | None:
    """Why the folder's engine cannot run here, or None when it can."""
    engine, info = spec.folder / ENGINE_FILE, read_json(spec.folder / ENGINE_JSON)
    if not engine.exists() or info is None:
        return f"{spec.folder}: no {ENGINE_FILE} / {ENGINE_JSON}: run `emoflow convert` first"
    try:
        here = machine()
    except EmoflowError as exc:
        return str(exc)
    built = {k: info.get(k) for k in here}
    if built != here:
        return (f"{engine} was built for {_describe(built)}, this machine has {_describe(here)}: "
                f"an engine is tied to its GPU and TensorRT version; rebuild it here with "
                f"`emoflow convert --model {spec.arch}`")  # fmt: skip
    if info.get("source_sha256") != file_sha256(spec.model_file):
        return (f"{engine} was built from another {spec.model_file.name}: run `emoflow export` "
                f"and `emoflow convert` again")  # fmt: skip
    return None


def _describe(m: dict[str, Any]) -> str:
    return (f"{m.get('gpu')} (compute {m.get('compute_capability')}), TensorRT "
            f"{m.get('tensorrt')}")  # fmt: skip


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    """The torch type of a TensorRT tensor type, through TensorRT's own numpy mapping
    (``trt.nptype``): every type TensorRT can hand numpy, uint8 included."""
    try:
        np_type = trt.nptype(dtype)
    except TypeError as exc:
        raise EmoflowError(f"TensorRT tensor type {dtype} has no numpy equivalent ({exc}): "
                           "this engine's inputs/outputs are not the clip graph's") from None
    return torch.from_numpy(np.empty(0, dtype=np_type)).dtype


@dataclass(frozen=True)
class Profile:
    """The engine's optimisation profile 0: (min, opt, max) clips and frames, and the image
    dimensions (H, W, C) it was built for."""

    clips: tuple[int, int, int]
    frames: tuple[int, int, int]
    image: tuple[int, ...]

    def as_json(self) -> dict[str, list[int]]:
        return {"clips": list(self.clips), "frames": list(self.frames), "image": list(self.image)}


def engine_profile(engine: Any, where: str) -> Profile:
    """Profile 0 of ``engine``, read from the engine (``get_tensor_profile_shape``)."""
    lo, opt, hi = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(INPUTS[0], 0))
    m_lo, m_opt, m_hi = (tuple(int(d) for d in s)
                         for s in engine.get_tensor_profile_shape(INPUTS[1], 0))  # fmt: skip
    if len(lo) != 5 or lo[2:] != hi[2:] or (m_lo, m_opt, m_hi) != (lo[:2], opt[:2], hi[:2]):
        raise EmoflowError(f"{where}: the engine's profile is not the clip graph's (frames "
                           f"{lo}..{hi}, mask {m_lo}..{m_hi}): rebuild it with "
                           "`emoflow convert`")  # fmt: skip
    return Profile((lo[0], opt[0], hi[0]), (lo[1], opt[1], hi[1]), lo[2:])


def batches(profile: Profile, clips: int, frames: int, image: tuple[int, ...], where: str
            ) -> list[tuple[int, int]]:  # fmt: skip
    """The (start, stop) clip slices of a batch that each fit the profile; refuses what no
    split can make fit (too many frames per clip, another image size)."""
    if image != profile.image:
        raise EmoflowError(f"{where}: the engine takes {_shape(profile.image)} face images, not "
                           f"{_shape(image)}: it was built for another model; run "
                           "`emoflow convert` again")  # fmt: skip
    if frames > profile.frames[2]:
        raise EmoflowError(f"{where}: a clip of {frames} frames is more than the engine's "
                           f"optimisation profile takes ({profile.frames[2]} frames a clip); "
                           f"send at most {profile.frames[2]} or rebuild it with `emoflow "
                           f"convert --max-frames {frames}`")  # fmt: skip
    step = profile.clips[2]
    return [(s, min(s + step, clips)) for s in range(0, clips, step)]


def _shape(image: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in image)


def pad_to_profile(frames: np.ndarray, mask: np.ndarray, profile: Profile
                   ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Masked padding frames up to the profile's min frames and stand-in clips (one visible
    black frame each) up to its min clips; the caller keeps only the real rows and frames."""
    b, t = mask.shape
    extra_t, extra_b = max(0, profile.frames[0] - t), max(0, profile.clips[0] - b)
    if extra_t:
        frames = np.concatenate([frames, np.zeros((b, extra_t, *frames.shape[2:]),
                                                  frames.dtype)], axis=1)  # fmt: skip
        mask = np.concatenate([mask, np.zeros((b, extra_t), mask.dtype)], axis=1)
    if extra_b:
        fill = np.zeros((extra_b, *mask.shape[1:]), mask.dtype)
        fill[:, 0] = True
        frames = np.concatenate([frames, np.zeros((extra_b, *frames.shape[1:]), frames.dtype)])
        mask = np.concatenate([mask, fill])
    return frames, mask


class EngineRunner:
    """Runs serialised engine bytes with PyTorch tensors as its buffers (no other CUDA
    bindings needed). ``trt`` and ``device`` are for tests only (a stand-in TensorRT on the
    CPU); by default TensorRT itself, on the current CUDA device."""

    def __init__(self, engine: bytes, where: str, arch: str, trt: Any = None,
                 device: str | None = None) -> None:  # fmt: skip
        trt = trt or import_tensorrt()
        self.where = where
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise EmoflowError(f"{where}: TensorRT cannot load this engine; rebuild it with "
                               f"`emoflow convert --model {arch}`")  # fmt: skip
        self.profile = engine_profile(self.engine, where)
        self._dtypes = {n: torch_dtype(trt, self.engine.get_tensor_dtype(n))
                        for n in (*INPUTS, *OUTPUTS)}  # fmt: skip
        self.context, self._user_memory = _create_context(trt, self.engine)
        self.device = (torch.device(device) if device
                       else torch.device("cuda", torch.cuda.current_device()))  # fmt: skip
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._lock = threading.Lock()

    @property
    def max_frames(self) -> int:
        return self.profile.frames[2]

    def run(self, frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clips, t = mask.shape
        parts = [self._run_fitted(frames[a:b], mask[a:b])
                 for a, b in batches(self.profile, clips, t, tuple(frames.shape[2:]),
                                     self.where)]  # fmt: skip
        probs, weights = zip(*parts, strict=True)
        return np.concatenate(probs), np.concatenate(weights)

    def _run_fitted(self, frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clips, t = mask.shape
        frames, mask = pad_to_profile(frames, mask, self.profile)
        with self._lock, self._on_stream() as stream:
            buffers = self._bind(frames, mask)
            if not self.context.execute_async_v3(stream):
                raise EmoflowError("TensorRT execution failed (see the TensorRT log above)")
            probs, weights = (buffers[n].float().cpu().numpy() for n in OUTPUTS)
        return probs[:clips], weights[:clips, :t]

    def _bind(self, frames: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
        """Input, output and activation buffers for this call's shapes, on the device."""
        buffers: dict[str, torch.Tensor] = {}
        for name, array in zip(INPUTS, (frames, mask), strict=True):
            buf = torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self._dtypes[name])
            buffers[name] = buf.contiguous()
            if not self.context.set_input_shape(name, tuple(buf.shape)):
                raise EmoflowError(f"{self.where}: TensorRT refused the input shape "
                                   f"{tuple(buf.shape)} of {name!r} (outside the engine's "
                                   f"optimisation profile {self.profile.as_json()})")  # fmt: skip
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        for name in OUTPUTS:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EmoflowError(f"{self.where}: TensorRT could not infer the shape of "
                                   f"{name!r} ({shape}) for a mask of {mask.shape}")  # fmt: skip
            buffers[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        if self._user_memory:  # activations for these shapes, from torch's cache
            size = int(self.context.update_device_memory_size_for_shapes())
            buffers["_scratch"] = torch.empty(max(size, 1), dtype=torch.uint8, device=self.device)
            self.context.set_device_memory(buffers["_scratch"].data_ptr(), size)
        return buffers

    @contextlib.contextmanager
    def _on_stream(self) -> Iterator[int]:
        """The runner's own stream, ordered after the caller's current one; the copies,
        allocations and the engine all go on it, and it is waited for at the end."""
        if self._stream is None:
            yield 0
            return
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            yield self._stream.cuda_stream
        self._stream.synchronize()


def _create_context(trt: Any, engine: Any) -> tuple[Any, bool]:
    """An execution context whose activation memory the runner supplies per call, where this
    TensorRT offers it (10.1+); else one that holds the max profile's memory itself."""
    strategy = getattr(getattr(trt, "ExecutionContextAllocationStrategy", None),
                       "USER_MANAGED", None)  # fmt: skip
    if strategy is not None:
        try:
            context = engine.create_execution_context(strategy)
        except TypeError:  # a binding that takes an IRuntimeConfig instead
            config = engine.create_runtime_config()
            config.set_execution_context_allocation_strategy(strategy)
            context = engine.create_execution_context(config)
        if context is not None and hasattr(context, "update_device_memory_size_for_shapes"):
            return context, True
    context = engine.create_execution_context()
    if context is None:
        raise EmoflowError("TensorRT could not create an execution context (GPU memory?)")
    return context, False


class TensorRTBackend(EngineRunner):
    """The folder's engine, once ``unusable`` finds nothing against it."""

    name = "tensorrt"
    reason = "asked for (backend tensorrt)"

    def __init__(self, spec: ModelSpec) -> None:
        why = unusable(spec)
        if why is not None:
            raise EmoflowError(why)
        path = spec.folder / ENGINE_FILE
        super().__init__(path.read_bytes(), str(path), spec.arch)
