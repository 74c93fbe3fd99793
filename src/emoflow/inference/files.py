"""``emoflow predict``: one answer per video file, whatever happens to the others."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from emoflow.errors import EmoflowError
from emoflow.inference.predictor import Predictor
from emoflow.inference.schema import ClipResult

log = logging.getLogger(__name__)


def summary_line(path: Path, r: ClipResult) -> str:
    warnings = "".join(f"; warning: {w}" for w in r.warnings)
    return (f"{path}: {r.label} {r.confidence:.2f} (face in {r.faces_found} of "
            f"{r.frames_decoded} frames, {len(r.frames)} used; {r.model.name} on "
            f"{r.model.backend}, {r.timings_ms.total:.0f} ms){warnings}")  # fmt: skip


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
        except Exception as exc:  # one file's failure, a bug included, never stops the batch
            failed += 1
            if isinstance(exc, EmoflowError):
                message = str(exc)
            else:
                log.error("predict: %s failed", path, exc_info=exc)
                message = f"{path}: unexpected error ({type(exc).__name__}: {exc})"
            tqdm.write(f"error: {message}", file=err)
            if as_json:
                tqdm.write(json.dumps({"file": str(path), "error": message}), file=out)
            continue
        line = json.dumps({"file": str(path), **r.model_dump(mode="json")}) if as_json else (
            summary_line(path, r))  # fmt: skip
        tqdm.write(line, file=out)
    bar.close()
    return failed
