"""``emoflow predict``: one answer per video file, whatever happens to the others."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from emoflow.errors import EmoflowError
from emoflow.inference.predictor import Predictor
from emoflow.inference.schema import ClipResult


def summary_line(path: Path, r: ClipResult) -> str:
    return (f"{path}: {r.label} {r.confidence:.2f} (face in {r.faces_found} of "
            f"{r.frames_decoded} frames, {len(r.frames)} used; {r.model.name} on "
            f"{r.model.backend}, {r.timings_ms.total:.0f} ms)")  # fmt: skip


def predict_files(predictor: Predictor, paths: Sequence[Path], as_json: bool = False,
                  out: TextIO | None = None, err: TextIO | None = None) -> int:  # fmt: skip
    """Predict every file; print a line (or a JSON line) per file, an ``error:`` line on
    stderr for each file that fails (not a video, no face; with ``as_json`` also a JSON line
    ``{"file", "error"}``). Returns the number of files that failed."""
    out, err = out or sys.stdout, err or sys.stderr
    failed = 0
    bar = tqdm(paths, desc="predict", unit="video", file=err, disable=len(paths) < 2,
               leave=False)  # fmt: skip
    for path in bar:
        try:
            r = predictor.predict_video(path)
        except EmoflowError as exc:
            failed += 1
            tqdm.write(f"error: {exc}", file=err)
            if as_json:
                tqdm.write(json.dumps({"file": str(path), "error": str(exc)}), file=out)
            continue
        line = json.dumps({"file": str(path), **r.model_dump(mode="json")}) if as_json else (
            summary_line(path, r))  # fmt: skip
        tqdm.write(line, file=out)
    bar.close()
    return failed
