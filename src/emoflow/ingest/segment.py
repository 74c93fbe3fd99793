"""``emoflow segment``: session recordings → one clip per trial, starting at its trigger beep."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from emoflow.config import SegmentParams
from emoflow.errors import EmoflowError
from emoflow.fsio import atomic_dir
from emoflow.ingest.beeps import describe_mismatch, detect_beeps
from emoflow.ingest.protocol import ProtocolTrial, read_protocol
from emoflow.media.video import MediaWriter, iter_frames, probe, read_audio
from emoflow.parallel import parallel_map, worker_count
from emoflow.tables import write_table

log = logging.getLogger(__name__)

TRIALS_COLUMNS = ("trial_id", "participant", "trial", "emotion", "beep_s", "fps", "frames",
                  "duration_s", "width", "height")  # fmt: skip
TRIALS_CSV = "trials.csv"
SKIPPED_CSV = "skipped.csv"


class SegmentError(EmoflowError):
    """Beeps and protocol disagree and params say to stop."""


@dataclass
class SessionResult:
    participant: str
    rows: list[dict] = field(default_factory=list)
    beeps: int = 0
    skipped: str | None = None  # why no clip of this participant was written


def segment_session(video: Path, trials: list[ProtocolTrial], params: SegmentParams,
                    out_dir: Path) -> SessionResult:  # fmt: skip
    """Detect the beeps of one session; when they match the protocol, write the trial clips.

    The k-th beep starts the k-th protocol trial of the participant. On a count mismatch nothing
    is written: shifting labels onto the wrong trials is worse than losing a session.
    """
    participant = video.stem
    audio, sr = read_audio(video)
    beeps = detect_beeps(audio, sr, params)
    result = SessionResult(participant, beeps=len(beeps))
    if len(beeps) != len(trials):
        result.skipped = f"{participant} ({video}): {describe_mismatch(beeps, len(trials))}"
        return result
    info = probe(video)
    fps = info.fps
    n_clip = round(params.clip_s * fps)
    per = sr / fps
    starts = {round(b.onset_s * fps): (b, t) for b, t in zip(beeps, trials, strict=True)}
    open_clips: dict[str, tuple[MediaWriter, int, int]] = {}  # trial id → writer, start, count
    written: dict[str, int] = {}

    def close(tid: str) -> None:
        writer, _, count = open_clips.pop(tid)
        writer.close()
        written[tid] = count

    for i, frame in enumerate(iter_frames(video)):
        if i in starts:
            _, t = starts[i]
            writer = MediaWriter(out_dir / f"{t.trial_id}.mp4", round(fps), info.width,
                                 info.height, sr, params.crf)  # fmt: skip
            open_clips[t.trial_id] = (writer, i, 0)
        for tid in list(open_clips):
            writer, start, count = open_clips[tid]
            writer.write_frame(frame)
            writer.write_audio(audio[round(i * per) : round((i + 1) * per)])
            open_clips[tid] = (writer, start, count + 1)
            if count + 1 == n_clip:
                close(tid)
    for tid in list(open_clips):  # a beep near the end of the file: a short clip, kept
        close(tid)
    for b, t in starts.values():
        frames = written.get(t.trial_id, 0)
        result.rows.append({
            "trial_id": t.trial_id, "participant": participant, "trial": t.trial,
            "emotion": t.emotion, "beep_s": f"{b.onset_s:.4f}", "fps": f"{fps:g}",
            "frames": frames, "duration_s": f"{frames / fps:.4f}", "width": info.width,
            "height": info.height,
        })  # fmt: skip
    return result


def _run(args: tuple[Path, list[ProtocolTrial], SegmentParams, Path]) -> SessionResult:
    return segment_session(*args)


def segment_sessions(sessions_dir: Path, protocol_csv: Path, out_dir: Path,
                     params: SegmentParams) -> list[dict]:  # fmt: skip
    """Cut every session into trial clips under ``out_dir`` with ``trials.csv``; atomically."""
    protocol = read_protocol(protocol_csv)
    videos = {p.stem: p for p in sorted(Path(sessions_dir).glob("*.mp4"))}
    problems: list[str] = []
    for pid in sorted(set(videos) - set(protocol)):
        log.warning("segment: %s has no trials in %s: not segmented", videos[pid], protocol_csv)
    for pid in sorted(set(protocol) - set(videos)):
        problems.append(f"{pid}: {len(protocol[pid])} trials in {protocol_csv} but no "
                        f"{Path(sessions_dir) / (pid + '.mp4')}")  # fmt: skip
    jobs = sorted(set(videos) & set(protocol))
    n_trials = sum(len(protocol[p]) for p in jobs)
    log.info("segment: %d sessions, %d protocol trials, %d workers", len(jobs), n_trials,
             worker_count(params.workers, len(jobs)))  # fmt: skip
    rows: list[dict] = []
    n_beeps = 0
    with atomic_dir(out_dir) as tmp:
        args = [(videos[p], protocol[p], params, tmp) for p in jobs]
        results = parallel_map(_run, args, params.workers, "sessions", "video")
        for r in results:
            n_beeps += r.beeps
            if r.skipped:
                problems.append(r.skipped)
            rows.extend(r.rows)
        if problems and params.on_mismatch == "fail":
            for p in problems:
                log.error("segment: %s", p)
            more = f" (and {len(problems) - 1} more, see log)" if len(problems) > 1 else ""
            raise SegmentError(f"beeps and protocol disagree: {problems[0]}{more}; "
                               "nothing written (segment.on_mismatch: fail)")  # fmt: skip
        for p in problems:
            log.warning("segment: skipped %s", p)
        write_table(tmp / TRIALS_CSV, TRIALS_COLUMNS, rows)
        skipped = [{"participant": p.split(" ", 1)[0].rstrip(":"), "reason": p} for p in problems]
        write_table(tmp / SKIPPED_CSV, ("participant", "reason"), skipped)
    log.info(
        "segment: read %d sessions, found %d beeps, wrote %d trial clips to %s; skipped %d "
        "participants", len(jobs), n_beeps, len(rows), out_dir, len(problems),
    )  # fmt: skip
    return rows

