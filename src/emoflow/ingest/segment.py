"""``emoflow segment``: session recordings → one clip per trial, starting at its trigger beep."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from emoflow.config import SegmentParams
from emoflow.errors import EmoflowError, InputError
from emoflow.fsio import atomic_dir
from emoflow.guards import check_outputs, keep_nonempty, params_inputs
from emoflow.ingest.beeps import Beep, cut_short, describe_mismatch, detect_beeps
from emoflow.ingest.protocol import ProtocolTrial, describe_rows, read_protocol
from emoflow.media.formats import VIDEO_EXTS, dotted
from emoflow.media.video import MediaWriter, iter_frames, probe, read_audio
from emoflow.parallel import parallel_map, worker_count
from emoflow.tables import write_table

log = logging.getLogger(__name__)

TRIALS_COLUMNS = ("trial_id", "participant", "trial", "emotion", "beep_s", "fps", "frames",
                  "duration_s", "width", "height")  # fmt: skip
TRIALS_CSV = "trials.csv"
SKIPPED_CSV = "skipped.csv"
# Session recordings, by extension in any case (cameras write .MP4); PyAV decodes them all.
SESSION_EXTS = dotted(VIDEO_EXTS)


class SegmentError(EmoflowError):
    """Sessions and protocol disagree and params say to stop."""


def find_sessions(sessions_dir: Path) -> dict[str, Path]:
    """``participant → recording`` in ``sessions_dir``: files with a :data:`SESSION_EXTS` name."""
    if not sessions_dir.exists():
        raise InputError(sessions_dir, "the sessions folder does not exist")
    if not sessions_dir.is_dir():
        raise InputError(sessions_dir, "--sessions must be a folder of session recordings")
    videos: dict[str, Path] = {}
    for p in sorted(sessions_dir.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in SESSION_EXTS or not p.is_file():
            continue
        if p.stem in videos:
            raise InputError(p, f"a second recording of participant {p.stem} (also "
                                f"{videos[p.stem].name}): keep one")  # fmt: skip
        videos[p.stem] = p
    if not videos:
        raise InputError(sessions_dir, "no session recordings in the folder (expected "
                         f"<participant>{'|'.join(SESSION_EXTS)}, any case)")  # fmt: skip
    return videos


@dataclass
class SessionBeeps:
    """One session's trigger beeps, and why it cannot be segmented (None: it can)."""

    video: Path
    trials: list[ProtocolTrial]
    beeps: list[Beep] = field(default_factory=list)
    skipped: str | None = None


def find_session_beeps(video: Path, trials: list[ProtocolTrial], params: SegmentParams,
                       protocol_csv: Path) -> SessionBeeps:  # fmt: skip
    """Detect the beeps of one session and check them against its protocol trials.

    The k-th beep starts the k-th protocol trial of the participant. On a count mismatch the
    session is not cut: shifting labels onto the wrong trials is worse than losing a session.
    """
    audio, sr = read_audio(video)
    beeps = detect_beeps(audio, sr, params)
    found = SessionBeeps(video, trials, beeps)
    if len(beeps) != len(trials):
        why = describe_mismatch(beeps, len(trials), len(audio) / sr, probe(video).duration_s,
                                params.clip_s, describe_rows(trials[len(beeps):], protocol_csv))
        found.skipped = f"{video.stem} ({video}): beeps and protocol disagree: {why}"
    return found


def cut_session(session: SessionBeeps, params: SegmentParams, out_dir: Path) -> list[dict]:
    """Write one clip per trial, from its beep's frame on; return the trials.csv rows."""
    video, trials, beeps = session.video, session.trials, session.beeps
    audio, sr = read_audio(video)
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

    decoded = 0
    for i, frame in enumerate(iter_frames(video)):
        decoded += 1
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
        log.warning("segment: %s: %s ends %d frames after its beep, short of the %d of "
                    "segment.clip_s: a short clip%s", tid, video, open_clips[tid][2], n_clip,
                    _cut_short(decoded, fps, info.duration_s))  # fmt: skip
        close(tid)
    rows = []
    for b, t in starts.values():
        frames = written.get(t.trial_id, 0)
        rows.append({
            "trial_id": t.trial_id, "participant": t.participant, "trial": t.trial,
            "emotion": t.emotion, "beep_s": f"{b.onset_s:.4f}", "fps": f"{fps:g}",
            "frames": frames, "duration_s": f"{frames / fps:.4f}", "width": info.width,
            "height": info.height,
        })  # fmt: skip
    return rows


def _cut_short(decoded: int, fps: float, declared_s: float) -> str:
    """The hint when fewer frames decode than the container declares."""
    if cut_short(decoded / fps, declared_s):
        return (f"; its video decodes to {decoded / fps:.1f} s of the {declared_s:.1f} s its "
                "container declares: the file is cut short")
    return ""


def _find(args: tuple[Path, list[ProtocolTrial], SegmentParams, Path]) -> SessionBeeps:
    return find_session_beeps(*args)


def _cut(args: tuple[SessionBeeps, SegmentParams, Path]) -> list[dict]:
    return cut_session(*args)


def segment_sessions(sessions_dir: Path, protocol_csv: Path, out_dir: Path,
                     params: SegmentParams) -> list[dict]:  # fmt: skip
    """Cut every session into trial clips under ``out_dir`` with ``trials.csv``; atomically.

    Every session's beeps are checked first: a mismatch fails (``on_mismatch: fail``) before
    any video is decoded.
    """
    check_outputs({"sessions": sessions_dir, "protocol": protocol_csv, **params_inputs(params)},
                  {"out": out_dir})  # fmt: skip
    protocol = read_protocol(protocol_csv)
    videos = find_sessions(Path(sessions_dir))
    problems: list[str] = []
    for pid in sorted(set(videos) - set(protocol)):
        log.warning("segment: %s has no trials in %s: not segmented", videos[pid], protocol_csv)
    for pid in sorted(set(protocol) - set(videos)):
        problems.append(f"{pid}: {len(protocol[pid])} trials in {protocol_csv} but no "
                        f"{Path(sessions_dir) / (pid + '.mp4')} (nor another "
                        f"{'/'.join(SESSION_EXTS)} recording of {pid})")  # fmt: skip
    jobs = sorted(set(videos) & set(protocol))
    n_trials = sum(len(protocol[p]) for p in jobs)
    log.info("segment: %d sessions, %d protocol trials, %d workers", len(jobs), n_trials,
             worker_count(params.workers, len(jobs)))  # fmt: skip
    found = parallel_map(_find, [(videos[p], protocol[p], params, protocol_csv) for p in jobs],
                         params.workers, "beeps", "session")  # fmt: skip
    n_beeps = sum(len(f.beeps) for f in found)
    problems += [f.skipped for f in found if f.skipped]
    if problems and params.on_mismatch == "fail":
        for p in problems:
            log.error("segment: %s", p)
        more = f" (and {len(problems) - 1} more, see log)" if len(problems) > 1 else ""
        raise SegmentError(f"cannot segment {problems[0]}{more}; nothing written "
                           "(segment.on_mismatch: fail)")  # fmt: skip
    for p in problems:
        log.warning("segment: skipped %s", p)
    rows: list[dict] = []
    with atomic_dir(out_dir) as tmp:
        ok = [(f, params, tmp) for f in found if not f.skipped]
        for session_rows in parallel_map(_cut, ok, params.workers, "sessions", "video"):
            rows.extend(session_rows)
        keep_nonempty("segment", out_dir / TRIALS_CSV, len(rows),
                      f"{len(problems)} participants skipped, first {problems[0]}" if problems
                      else f"no session in {sessions_dir} matches {protocol_csv}")  # fmt: skip
        write_table(tmp / TRIALS_CSV, TRIALS_COLUMNS, rows)
        skipped = [{"participant": p.split(" ", 1)[0].rstrip(":"), "reason": p} for p in problems]
        write_table(tmp / SKIPPED_CSV, ("participant", "reason"), skipped)
    log.info(
        "segment: read %d sessions, found %d beeps, wrote %d trial clips to %s; skipped %d "
        "participants", len(jobs), n_beeps, len(rows), out_dir, len(problems),
    )  # fmt: skip
    return rows

