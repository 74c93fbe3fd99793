"""The TensorRT runner's own logic on the CPU, against a stand-in for the part of TensorRT's
engine API it calls (as documented for TensorRT 10/11): the dtype mapping, the limits read from
the engine's profile, batch splitting and padding, the refusals, the checked
``set_input_shape`` and one context shared by threads. The real engine: tests/model/test_export.py
(gpu)."""

from __future__ import annotations

import ctypes
import enum
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emoflow.errors import EmoflowError
from emoflow.inference.trt import EngineRunner, Profile, batches, torch_dtype

K = 3  # classes of the stand-in model
IMAGE = (8, 8, 3)


class DataType(enum.Enum):  # tensorrt.DataType's members the clip graph uses, and bf16
    FLOAT = 0
    HALF = 1
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 9
    BF16 = 7


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT32: np.int32,
       DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}  # fmt: skip


def nptype(dtype: DataType) -> type:
    """tensorrt.nptype: TypeError for a type numpy lacks (bfloat16), as TensorRT's does."""
    if dtype not in _NP:
        raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype. "
                        f"{dtype}")  # fmt: skip
    return _NP[dtype]


def model(frames: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the stand-in engine computes: class scores from the visible frames' mean pixels,
    weights spread over the visible frames; a misaligned or mixed-up batch shows in both."""
    m = mask.astype(np.float32)
    per_frame = frames.reshape(*mask.shape, -1).astype(np.float32).mean(-1)  # (B, T)
    mean = (per_frame * m).sum(1) / m.sum(1)
    probs = np.stack([mean, mean / 2, np.full_like(mean, 7.0)], 1)
    return probs.astype(np.float32), (m / m.sum(1, keepdims=True)).astype(np.float32)


def _read(ptr: int, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = (ctypes.c_char * n).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


class Context:
    """IExecutionContext: shapes checked against the profile (False outside it, the previous
    shape kept), -1 until set, the buffers read and written at their addresses."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.memory = 0
        self.busy = 0
        self.overlaps = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        if name == "frames":
            self.busy += 1
            if self.busy > 1:  # another call is between its shapes and its execution
                self.overlaps += 1
            threading.Event().wait(0.001)  # widen the window a race would need
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        if len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi,
                                                                         strict=True)):  # fmt: skip
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        f, m = self.shapes.get("frames"), self.shapes.get("mask")
        b = f[0] if f else -1
        return (b, K) if name == "probabilities" else (b, m[1] if m else -1)

    def set_tensor_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def update_device_memory_size_for_shapes(self) -> int:
        return 1024

    def set_device_memory(self, ptr: int, size: int) -> None:
        self.memory = size

    def execute_async_v3(self, stream: int) -> bool:
        assert self.memory == 1024  # the runner supplied the activation memory
        f = _read(self.addresses["frames"], self.shapes["frames"], np.uint8)
        m = _read(self.addresses["mask"], self.shapes["mask"], np.bool_)
        probs, weights = model(f, m)
        for name, out in (("probabilities", probs), ("weights", weights)):
            ctypes.memmove(self.addresses[name], out.ctypes.data, out.nbytes)
        self.busy -= 1
        return True


class Engine:
    """ICudaEngine with one optimisation profile."""

    def __init__(self, clips: tuple[int, int, int], frames: tuple[int, int, int],
                 frames_dtype: DataType = DataType.UINT8) -> None:  # fmt: skip
        self.clips, self.frames, self.frames_dtype = clips, frames, frames_dtype
        self.contexts: list[Context] = []

    def get_tensor_dtype(self, name: str) -> DataType:
        return {"frames": self.frames_dtype, "mask": DataType.BOOL}.get(name, DataType.FLOAT)

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        assert index == 0
        dims = zip(self.clips, self.frames, strict=True)
        return [(b, t, *IMAGE) if name == "frames" else (b, t) for b, t in dims]

    def create_execution_context(self, strategy: object = None) -> Context:
        assert strategy == "USER_MANAGED"
        self.contexts.append(Context(self))
        return self.contexts[-1]


class Logger:
    WARNING = 2

    def __init__(self, level: int) -> None:
        self.level = level


def fake_trt(engine: Engine) -> SimpleNamespace:
    return SimpleNamespace(
        nptype=nptype, Logger=Logger,
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda b: engine),
        ExecutionContextAllocationStrategy=SimpleNamespace(USER_MANAGED="USER_MANAGED"))


def runner(clips: tuple[int, int, int] = (1, 4, 8), frames: tuple[int, int, int] = (1, 4, 6),
           frames_dtype: DataType = DataType.UINT8) -> EngineRunner:  # fmt: skip
    trt = fake_trt(Engine(clips, frames, frames_dtype))
    return EngineRunner(b"engine", "model.engine", "fan", trt=trt, device="cpu")


def clip_batch(clips: int, frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (clips, frames, *IMAGE), dtype=np.uint8)
    mask = np.ones((clips, frames), dtype=bool)
    mask[::3, max(1, frames // 2) :] = False  # padded clips, as collate_clips makes them
    return x, mask


def test_dtypes_come_from_tensorrts_own_mapping_uint8_included() -> None:
    trt = SimpleNamespace(nptype=nptype)
    assert torch_dtype(trt, DataType.UINT8) == torch.uint8  # the exported frames input
    assert torch_dtype(trt, DataType.BOOL) == torch.bool
    assert torch_dtype(trt, DataType.HALF) == torch.float16
    with pytest.raises(EmoflowError, match="no numpy equivalent"):
        torch_dtype(trt, DataType.BF16)


def test_limits_come_from_the_engine_profile() -> None:
    r = runner(clips=(2, 4, 8), frames=(1, 4, 6))
    assert r.profile == Profile((2, 4, 8), (1, 4, 6), IMAGE)
    assert r.max_frames == 6


@pytest.mark.parametrize(("clips", "frames"), [(16, 4), (9, 6), (8, 1), (1, 3), (3, 2)])
def test_batches_beyond_or_below_the_profile_give_each_clip_its_own_result(
    clips: int, frames: int
) -> None:
    """16 clips against a max of 8 (the predictor's chunk against a smaller --max-batch), one
    clip against a min of 2: split or padded, and every row is that clip's own answer."""
    r = runner(clips=(2, 4, 8), frames=(2, 4, 6))
    x, m = clip_batch(clips, frames)
    probs, weights = r.run(x, m)
    want_p, want_w = model(x, m)
    assert probs.shape == (clips, K) and weights.shape == (clips, frames)
    np.testing.assert_allclose(probs, want_p, rtol=1e-6)
    np.testing.assert_allclose(weights, want_w, rtol=1e-6)


def test_split_plan_follows_the_max_clips() -> None:
    p = Profile((1, 4, 8), (1, 16, 16), IMAGE)
    assert batches(p, 16, 16, IMAGE, "e") == [(0, 8), (8, 16)]
    assert batches(p, 20, 3, IMAGE, "e") == [(0, 8), (8, 16), (16, 20)]


def test_a_clip_longer_than_the_profile_is_refused_with_the_fix() -> None:
    r = runner(frames=(1, 4, 6))
    with pytest.raises(EmoflowError, match=r"clip of 7 frames .* \(6 frames a clip\).*"
                                           r"emoflow convert --max-frames 7"):  # fmt: skip
        r.run(*clip_batch(2, 7))
    with pytest.raises(EmoflowError, match=r"takes 8×8×3 face images, not 9×8×3"):
        r.run(np.zeros((1, 2, 9, 8, 3), np.uint8), np.ones((1, 2), bool))


def test_a_shape_tensorrt_refuses_is_an_error_not_stale_results() -> None:
    r = runner()
    r.run(*clip_batch(2, 3))  # the context now holds shapes of 2 clips
    r.profile = Profile((1, 4, 64), (1, 4, 6), IMAGE)  # a runner that misjudged the limits
    with pytest.raises(EmoflowError, match=r"refused the input shape \(20, 3, 8, 8, 3\)"):
        r.run(*clip_batch(20, 3))


def test_one_context_is_used_by_one_call_at_a_time() -> None:
    r = runner(clips=(1, 4, 8))
    batches_in = [clip_batch(1 + i % 8, 1 + i % 5, seed=i) for i in range(48)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda b: r.run(*b), batches_in))
    for (x, m), (p, w) in zip(batches_in, outs, strict=True):
        np.testing.assert_allclose(p, model(x, m)[0], rtol=1e-6)
        np.testing.assert_allclose(w, model(x, m)[1], rtol=1e-6)
    assert r.context.overlaps == 0
