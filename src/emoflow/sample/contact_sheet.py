"""A PNG contact sheet of one participant's expressions, cut from the sample's own videos."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import cv2
import numpy as np

from emoflow.config import EMOTIONS
from emoflow.errors import InputError
from emoflow.fsio import atomic_path
from emoflow.media.video import iter_frames
from emoflow.sample.generate import SESSIONS_DIR, TRUTH_DIR

log = logging.getLogger(__name__)


def write_contact_sheet(root: Path, participant: str, out: Path, tile_width: int = 240) -> None:
    """One tile per emotion: the peak frame of the participant's first unflagged trial of it."""
    truth = root / TRUTH_DIR / "trials.csv"
    if not truth.exists():
        raise InputError(truth, "no sample ground truth: run `emoflow sample` first")
    with truth.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["participant"] == participant]
    if not rows:
        raise InputError(truth, f"no trials of participant {participant!r}")
    clean = [r for r in rows if r["non_correlating"] == r["low_occlusion"] == r["heavy_occlusion"]
             == r["other"] == "0"]  # fmt: skip
    picks: dict[int, str] = {}
    for emotion in EMOTIONS:
        for r in clean + rows:
            if r["rendered_emotion"] == emotion:
                picks[int(r["onset_frame"]) + int(r["peak"])] = emotion
                break
    tiles: dict[str, np.ndarray] = {}
    for i, frame in enumerate(iter_frames(root / SESSIONS_DIR / f"{participant}.mp4")):
        if i in picks:
            tiles[picks[i]] = frame
        if len(tiles) == len(picks):
            break
    ordered = [(e, tiles[e]) for e in EMOTIONS if e in tiles]
    h, w = ordered[0][1].shape[:2]
    th = round(tile_width * h / w)
    row: list[np.ndarray] = []
    for emotion, frame in ordered:
        tile = cv2.resize(frame, (tile_width, th), interpolation=cv2.INTER_AREA)
        cv2.rectangle(tile, (0, th - 26), (tile_width, th), (0, 0, 0), -1)
        cv2.putText(tile, emotion, (8, th - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                    cv2.LINE_AA)  # fmt: skip
        row.append(tile)
    cols = 4
    while len(row) % cols:
        row.append(np.zeros_like(row[0]))
    sheet = np.vstack([np.hstack(row[i : i + cols]) for i in range(0, len(row), cols)])
    with atomic_path(out) as tmp:
        _, buf = cv2.imencode(".png", sheet)
        tmp.write_bytes(buf.tobytes())
    log.info("contact sheet: %s, %d expressions of %s", out, len(ordered), participant)
