"""How often the slow fallback detectors may run, so that frames without a face stay cheap.

HOG on a downscaled frame costs a few milliseconds; the fallbacks do not (CLAHE + HOG about as
much again, dlib's CNN some 50–60 times HOG). Running the whole chain on every frame without a
face made face-less footage crawl at about 2 frames/s. The budget: HOG runs whenever a detection
is due; a fallback runs at most once per detection interval (``detect_every``) while a face was
seen within the last interval or right after a tracked box was refused, and at most once every
``fallback_every`` frames otherwise (the first time on the clip's first frame). A face the fallbacks
alone can see is then still found within ``fallback_every`` frames, and tracked (with a
fallback once per interval) from there.
"""

from __future__ import annotations

from collections import Counter

FALLBACKS = ("hog_clahe", "cnn")


class FallbackBudget:
    """Decides, frame by frame, which fallback detectors may run; counts every detector call."""

    def __init__(self, detect_every: int, fallback_every: int) -> None:
        self.window = detect_every
        self.recent_gap = min(detect_every, fallback_every)
        self.idle_gap = fallback_every
        self.last_face = -detect_every - 1  # none yet: the clip's first frame runs them once
        self.last_try: dict[str, int] = {}
        self.calls: Counter[str] = Counter()

    def allows(self, name: str, frame: int, dropped: bool = False) -> bool:
        """Whether ``name`` may run on ``frame``; always right after a refused track (the face
        was there a frame ago, so the cost is bounded by the face-present case)."""
        if name not in FALLBACKS or dropped:
            return True
        gap = self.recent_gap if frame - self.last_face <= self.window else self.idle_gap
        last = self.last_try.get(name)
        return last is None or frame - last >= gap

    def ran(self, names: list[str], frame: int) -> None:
        """Record the detectors that ran on ``frame``."""
        self.calls.update(names)
        for name in names:
            self.last_try[name] = frame

    def face(self, frame: int) -> None:
        self.last_face = frame
