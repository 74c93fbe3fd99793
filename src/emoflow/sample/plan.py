"""What each sample session holds: trials, their timing, expressions and flags (the ground truth).

Planning is separate from rendering so the truth can be checked without decoding a video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emoflow.config import EMOTIONS, SampleParams
from emoflow.ingest.marks import FLAG_NAMES, Marks
from emoflow.sample.expressions import envelope


def participant_id(index: int) -> str:
    return f"p{index + 1:03d}"


def trial_id(participant: str, trial: int) -> str:
    return f"{participant}_{trial:03d}"


@dataclass(frozen=True)
class TrialPlan:
    trial_id: str
    participant: str
    trial: int  # 1-based, as the stimulus program numbers them
    protocol_emotion: str  # what the stimulus was meant to elicit
    rendered_emotion: str  # what the face shows (differs when non-correlating)
    onset_frame: int  # beep onset, frame index in the session video
    onset_s: float
    rise: int
    hold: int
    decay: int
    start: int  # expression frames, relative to the trial clip (onset = frame 0)
    intensity: float
    flags: dict[str, int]
    occluder: str | None = None  # "hand" | "object" when occluded
    occluder_target: float = 0.0

    def curve(self, n_frames: int) -> np.ndarray:
        """Expression intensity per trial frame, 0..``intensity``."""
        return envelope(n_frames, self.start, self.rise, self.hold, self.decay) * self.intensity

    def marks(self, n_frames: int) -> Marks:
        """The marks a careful labeller gives: where the rendered movement starts, ends, peaks."""
        c = self.curve(n_frames)
        on = np.flatnonzero(c > 0.02 * self.intensity)
        return Marks(int(on[0]), int(on[-1]), int(np.argmax(c)), **self.flags)


@dataclass(frozen=True)
class SessionPlan:
    participant: str
    index: int
    n_frames: int
    trial_frames: int
    trials: list[TrialPlan]
    speech: list[tuple[int, int]] = field(default_factory=list)  # frame ranges of talking
    blinks: list[int] = field(default_factory=list)  # first frame of each blink


def assign_flags(n_trials: int, params: SampleParams, rng: np.random.Generator) -> list[dict]:
    """Flags per trial over the whole sample: fixed counts (rate × trials), random trials.

    Low and heavy occlusion never share a trial. A rate > 0 gives at least one flagged trial once
    the sample has 20 trials, so every flag occurs in the default sample.
    """
    flags = [dict.fromkeys(FLAG_NAMES, 0) for _ in range(n_trials)]
    occluded: set[int] = set()
    for name in FLAG_NAMES:
        rate = getattr(params.flag_rates, name)
        count = round(rate * n_trials)
        if rate > 0 and count == 0 and n_trials >= 20:
            count = 1
        pool = [i for i in range(n_trials) if not (name.endswith("occlusion") and i in occluded)]
        for i in rng.choice(pool, size=min(count, len(pool)), replace=False):
            flags[int(i)][name] = 1
            if name.endswith("occlusion"):
                occluded.add(int(i))
    return flags


def plan_sample(params: SampleParams) -> list[SessionPlan]:
    """Plan every session of the sample, deterministically from ``params.seed``."""
    rng = np.random.default_rng(params.seed)
    n_total = params.participants * params.trials_per_participant
    all_flags = assign_flags(n_total, params, rng)
    return [
        plan_session(
            params,
            p,
            all_flags[p * params.trials_per_participant : (p + 1) * params.trials_per_participant],
        )
        for p in range(params.participants)
    ]


def plan_session(params: SampleParams, index: int, flags: list[dict]) -> SessionPlan:
    rng = np.random.default_rng([params.seed, index])
    fps = params.fps
    pid = participant_id(index)
    window = round(params.trial_s * fps)
    order = [EMOTIONS[i % len(EMOTIONS)] for i in range(params.trials_per_participant)]
    order = [str(e) for e in rng.permutation(order)]
    t = round(rng.uniform(params.lead_in_s.min, params.lead_in_s.max) * fps)
    trials: list[TrialPlan] = []
    speech: list[tuple[int, int]] = []
    for k, (emotion, fl) in enumerate(zip(order, flags, strict=True), start=1):
        rendered = emotion
        if fl["non_correlating"]:
            rendered = str(rng.choice([e for e in EMOTIONS if e != emotion]))
        rise = round(rng.uniform(0.35, 0.9) * fps)
        hold = round(rng.uniform(0.4, 1.4) * fps)
        decay = round(rng.uniform(0.5, 1.2) * fps)
        latest = window - (rise + hold + decay) - round(0.2 * fps)
        start = int(rng.integers(round(0.3 * fps), max(round(0.3 * fps) + 1, latest)))
        occluder = None
        target = 0.0
        if fl["low_occlusion"] or fl["heavy_occlusion"]:
            occluder = "hand" if rng.random() < 0.7 else "object"
            target = rng.uniform(0.33, 0.45) if fl["low_occlusion"] else rng.uniform(0.62, 0.72)
        trials.append(
            TrialPlan(
                trial_id=trial_id(pid, k),
                participant=pid,
                trial=k,
                protocol_emotion=emotion,
                rendered_emotion=rendered,
                onset_frame=t,
                onset_s=t / fps,
                rise=rise,
                hold=hold,
                decay=decay,
                start=start,
                intensity=float(rng.uniform(0.75, 1.0)),
                flags=fl,
                occluder=occluder,
                occluder_target=float(target),
            )
        )
        answer = round(rng.uniform(params.answer_s.min, params.answer_s.max) * fps)
        talk0 = t + window + round(rng.uniform(0.1, 0.4) * fps)
        talk1 = talk0 + round(rng.uniform(0.5, 0.85) * answer)
        speech.append((talk0, min(talk1, t + window + answer - 2)))
        t += window + answer
    n_frames = t - round(params.answer_s.min * fps * 0.5)  # last answer is cut short by the stop
    n_frames = max(n_frames, trials[-1].onset_frame + window) + round(
        rng.uniform(params.tail_s.min, params.tail_s.max) * fps
    )
    blinks: list[int] = []
    f = int(rng.integers(0, 3 * fps))
    while f < n_frames - 8:
        blinks.append(f)
        f += int(rng.uniform(2.0, 6.0) * fps)
    return SessionPlan(pid, index, n_frames, window, trials, speech, blinks)
