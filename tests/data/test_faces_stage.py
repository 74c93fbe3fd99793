"""``emoflow faces`` on sample trial clips: detection rate, selection, the face files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from emoflow.config import FacesParams
from emoflow.faces.pipeline import naive_params, process_clip
from emoflow.faces.stage import FACES_COLUMNS, extract_faces
from emoflow.faces.store import FaceClip
from emoflow.ingest.marks import read_marks


def _clips_csv(small_sample: Path, small_trials: Path, path: Path, n: int) -> list[dict]:
    with (small_trials / "trials.csv").open(newline="") as f:
        trials = list(csv.DictReader(f))[:n]
    rows = [{"trial_id": t["trial_id"], "participant": t["participant"], "label": t["emotion"],
             "peak": read_marks(small_sample / "marks" / f"{t['trial_id']}.txt").peak,
             "path": str(small_trials / f"{t['trial_id']}.mp4")} for t in trials]  # fmt: skip
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def test_faces_stage_writes_one_face_file_per_clip(small_sample: Path, small_trials: Path,
                                                    tmp_path: Path) -> None:  # fmt: skip
    clips = _clips_csv(small_sample, small_trials, tmp_path / "clips.csv", 4)
    out = tmp_path / "faces"
    params = FacesParams(workers=2, frames=8)
    extract_faces(tmp_path / "clips.csv", out, params)
    with (out / "faces.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(FACES_COLUMNS)
    decoded = sum(int(r["frames_decoded"]) for r in rows)
    found = sum(int(r["frames_with_face"]) for r in rows)
    assert decoded == 4 * 180 and found / decoded >= 0.95
    for r, c in zip(rows, clips, strict=True):
        sel = [int(s) for s in r["selected"].split()]
        assert len(sel) == 8 and sel == sorted(sel) and c["peak"] in sel
        assert sel[int(r["peak_position"])] == c["peak"]
        with FaceClip(out / r["file"]) as fc:
            assert len(fc) == 8 and fc.frame(0).shape == (224, 224, 3)
            assert fc.meta["frames"] == sel and len(fc.meta["landmarks"]) == 8
        assert int(r["hog"]) + int(r["tracked"]) + int(r["hog_clahe"]) + int(r["cnn"]) == int(
            r["frames_with_face"])  # fmt: skip


def test_fast_pipeline_agrees_with_the_naive_loop(small_trials: Path) -> None:
    clip = small_trials / "p001_002.mp4"
    params = FacesParams()
    fast = process_clip(clip, params, peak=60)
    naive = process_clip(clip, naive_params(params), peak=60, chip_every_frame=True)
    assert fast.counts["tracked"] > fast.frames_decoded // 2  # it really tracked
    common = sorted(set(fast.points) & set(naive.points))
    assert len(common) >= 0.95 * naive.frames_decoded
    iod = np.linalg.norm(naive.points[common[0]][42:48].mean(0)
                         - naive.points[common[0]][36:42].mean(0))  # fmt: skip
    dist = np.mean([np.linalg.norm(fast.points[i] - naive.points[i], axis=1).mean()
                    for i in common])  # fmt: skip
    assert dist < 0.05 * iod
