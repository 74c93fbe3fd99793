"""Shared fixtures: a small sample generated once per test session, with the real generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoflow.config import SampleParams


@pytest.fixture(scope="session")
def small_sample_params() -> SampleParams:
    # 3 × 7 = 21 trials: default flag rates then flag at least one trial of each kind.
    return SampleParams(participants=3, trials_per_participant=7, seed=7, workers=2)


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory: pytest.TempPathFactory, small_sample_params: SampleParams
                 ) -> Path:  # fmt: skip
    from emoflow.sample.generate import generate_sample

    root = tmp_path_factory.mktemp("sample") / "data"
    generate_sample(small_sample_params, root)
    return root


@pytest.fixture(scope="session")
def small_trials(small_sample: Path) -> Path:
    """``emoflow segment`` over the small sample: data/interim/trials beside it."""
    from emoflow.config import SegmentParams
    from emoflow.ingest.segment import segment_sessions

    out = small_sample / "interim" / "trials"
    segment_sessions(small_sample / "raw" / "sessions", small_sample / "raw" / "protocol.csv",
                     out, SegmentParams(workers=2))  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small learnable face dataset in the processed format: faces/ (+ faces.csv) and splits/.

    Three classes with clearly different content (two real portraits and one upside down), four
    participants (brightness and position vary by participant and frame).
    """
    import csv

    import cv2
    import numpy as np
    import skimage.data
    from matplotlib import cbook

    from emoflow.config import SplitParams
    from emoflow.datasets.splits import make_splits
    from emoflow.faces.stage import FACES_COLUMNS
    from emoflow.faces.store import write_face_clip

    root = tmp_path_factory.mktemp("tiny")
    faces = root / "faces"
    astro = cv2.resize(skimage.data.astronaut()[40:220, 130:310], (64, 64))
    hopper_path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    hopper = cv2.cvtColor(cv2.imread(str(hopper_path)), cv2.COLOR_BGR2RGB)
    hopper = cv2.resize(hopper[120:360, 140:380], (64, 64))
    sources = {"anger": astro, "happiness": hopper, "surprise": astro[::-1]}
    rng = np.random.default_rng(0)
    rows = []
    for p in range(4):
        for label, img in sources.items():
            for k in range(2):
                frames = []
                for _ in range(6):
                    m = np.float32([[1, 0, rng.integers(-3, 4)], [0, 1, rng.integers(-3, 4)]])
                    f = cv2.warpAffine(img, m, (64, 64), borderMode=cv2.BORDER_REFLECT)
                    frames.append(np.clip(f * (0.8 + 0.1 * p), 0, 255).astype(np.uint8))
                tid = f"p{p}_{label}_{k}"
                rel = f"{label}/{tid}.faces.zip"
                (faces / label).mkdir(parents=True, exist_ok=True)
                write_face_clip(faces / rel, frames, {"trial_id": tid})
                rows.append({"trial_id": tid, "participant": f"p{p}", "label": label,
                             "file": rel, "selected": "0 1 2 3 4 5", "excluded": ""})  # fmt: skip
    with (faces / "faces.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(FACES_COLUMNS), restval="")
        w.writeheader()
        w.writerows(rows)
    make_splits(faces / "faces.csv", root / "splits", SplitParams(folds=2))
    return root


@pytest.fixture(scope="session")
def tiny_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml for fast training on ``tiny_faces`` (small images, few epochs)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(workers=0)
    params["train"]["deep_emotion"].update(epochs=6, batch_size=16)
    params["train"]["fan"].update(epochs=3, batch_size=4, image_size=32, backbone="resnet18",
                                  backbone_lr_scale=1.0, features="appearance")  # fmt: skip
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
