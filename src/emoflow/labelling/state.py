"""The labelling core: key events → current frame, start/end/peak marks, flags and messages.

No GUI here: the window feeds key codes to :meth:`Labeller.press` and draws what it reads back,
so whole marking sessions are unit-tested as scripted key sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from emoflow.errors import EmoflowError
from emoflow.ingest.marks import FLAG_NAMES, Marks
from emoflow.labelling.keys import Action, action_for_key

MARK_ORDER: tuple[str, ...] = ("start", "end", "peak")

Saver = Callable[[Marks], None]
LabelSaver = Callable[[str], None]
MAX_CLASSES = 9  # keys 1-9 pick the class (review queues)


class Outcome(Enum):
    CONTINUE = "continue"
    QUIT = "quit"  # leave this clip, go on with the queue
    STOP = "stop"  # leave the tool


class Labeller:
    """State of marking one clip of ``frame_count`` frames; ``save`` writes a checked record."""

    def __init__(
        self, frame_count: int, save: Saver, marks: Marks | None = None, jump: int = 10
    ) -> None:
        if frame_count < 1:
            raise ValueError(f"a clip needs at least one frame, got {frame_count}")
        if jump < 1:
            raise ValueError(f"jump must be >= 1, got {jump}")
        self.frame_count = frame_count
        self.jump = jump
        self._save = save
        self.frame = 0
        self.marks: dict[str, int | None] = dict.fromkeys(MARK_ORDER)
        self.flags: dict[str, int] = dict.fromkeys(FLAG_NAMES, 0)
        self.saved: Marks | None = marks
        self.message = ""
        self.error = False
        self._pending: Action | None = None  # QUIT/STOP waiting for a second press
        if marks is not None:
            self.marks = {name: getattr(marks, name) for name in MARK_ORDER}
            self.flags = dict(marks.flags)
            self.say("loaded saved marks")
        # a review queue's clips also take a class: off (no classes) for the lab's trials
        self.classes: tuple[str, ...] = ()
        self.label: str | None = None
        self.saved_label: str | None = None
        self._save_label: LabelSaver | None = None

    def with_labels(self, classes: list[str] | tuple[str, ...], label: str | None,
                    save_label: LabelSaver, saved: bool = False) -> Labeller:  # fmt: skip
        """Let keys 1..n pick the clip's class among ``classes``, starting at ``label`` (the
        hint or the saved label: ``saved``); E then saves the class with the marks."""
        if not 1 <= len(classes) <= MAX_CLASSES:
            raise ValueError(f"1 to {MAX_CLASSES} classes, got {len(classes)}")
        if label is not None and label not in classes:
            raise ValueError(f"label {label!r} is not one of {list(classes)}")
        self.classes, self.label, self._save_label = tuple(classes), label, save_label
        self.saved_label = label if saved else None
        return self

    # -- what the overlay reads ---------------------------------------------------------------

    @property
    def next_mark(self) -> str | None:
        """Which mark the next S press sets (None once start, end and peak are all set)."""
        return next((name for name in MARK_ORDER if self.marks[name] is None), None)

    @property
    def active_flags(self) -> list[str]:
        return [name for name in FLAG_NAMES if self.flags[name]]

    @property
    def dirty(self) -> bool:
        """True when what is on screen differs from what is saved (or nothing is saved yet)."""
        if self.classes and self.label != self.saved_label:
            return True
        if self.saved is None:
            return any(v is not None for v in self.marks.values()) or any(self.flags.values())
        saved_marks = {name: getattr(self.saved, name) for name in MARK_ORDER}
        return self.marks != saved_marks or self.flags != self.saved.flags

    # -- events ----------------------------------------------------------------------------------

    def press(self, code: int) -> Outcome:
        """Handle one key code from ``cv2.waitKeyEx``; unbound keys do nothing."""
        if self.classes and ord("1") <= code < ord("1") + len(self.classes):
            self._pending = None
            self.label = self.classes[code - ord("1")]
            self.say(f"class {self.label}; E saves")
            return Outcome.CONTINUE
        action = action_for_key(code)
        return Outcome.CONTINUE if action is None else self.apply(action)

    def apply(self, action: Action) -> Outcome:
        pending, self._pending = self._pending, None
        if action in (Action.QUIT, Action.STOP):
            return self._leave(action, confirmed=pending is action)
        if action.flag is not None:
            self._toggle(action.flag)
        elif action is Action.MARK:
            self._mark()
        elif action is Action.SAVE:
            self._save_marks()
        elif action is Action.RESET:
            self.marks = dict.fromkeys(MARK_ORDER)
            self.flags = dict.fromkeys(FLAG_NAMES, 0)
            self.say("marks and flags reset (E saves, Q leaves the saved file as it was)")
        else:
            self._move(action)
        return Outcome.CONTINUE

    # -- actions ---------------------------------------------------------------------------------

    def _move(self, action: Action) -> None:
        step = {
            Action.FORWARD: 1,
            Action.BACK: -1,
            Action.JUMP_FORWARD: self.jump,
            Action.JUMP_BACK: -self.jump,
            Action.FIRST: -self.frame_count,
            Action.LAST: self.frame_count,
        }[action]
        self.frame = min(max(self.frame + step, 0), self.frame_count - 1)

    def _mark(self) -> None:
        name = self.next_mark
        start, end = self.marks["start"], self.marks["end"]
        if name is None:
            self.say("start, end and peak are set: W resets them", error=True)
        elif name == "end" and start is not None and self.frame < start:
            self.say(f"end must not lie before start (frame {start})", error=True)
        elif (
            name == "peak"
            and start is not None
            and end is not None
            and (not start <= self.frame <= end)
        ):
            self.say(f"peak must lie between start {start} and end {end}", error=True)
        else:
            self.marks[name] = self.frame
            after = self.next_mark
            hint = f"; next S marks {after}" if after else "; E saves"
            self.say(f"{name} = frame {self.frame}{hint}")

    def _toggle(self, flag: str) -> None:
        self.flags[flag] = 1 - self.flags[flag]
        self.say(f"{flag} {'on' if self.flags[flag] else 'off'}")

    def _save_marks(self) -> None:
        missing = [name for name in MARK_ORDER if self.marks[name] is None]
        if missing:
            self.say(f"not saved: mark {', '.join(missing)} first (S)", error=True)
            return
        start, end, peak = (self.marks[name] for name in MARK_ORDER)
        assert start is not None and end is not None and peak is not None
        marks = Marks(start=start, end=end, peak=peak, **self.flags)
        problems = marks.problems(self.frame_count)
        if self.classes and self.label is None:
            problems.append(f"pick a class (1-{len(self.classes)})")
        if problems:
            self.say("not saved: " + "; ".join(problems), error=True)
            return
        try:
            if self._save_label is not None and self.label is not None:
                self._save_label(self.label)  # first: a marks file means the clip is done
            self._save(marks)
        except (EmoflowError, OSError) as exc:
            self.say(f"not saved: {exc}", error=True)
            return
        self.saved, self.saved_label = marks, self.label
        self.say(f"saved (class {self.label})" if self.classes else "saved")

    def _leave(self, action: Action, confirmed: bool) -> Outcome:
        if self.dirty and not confirmed:
            self._pending = action
            key = "Q" if action is Action.QUIT else "Esc"
            self.say(f"unsaved changes: {key} again leaves without saving, E saves", error=True)
            return Outcome.CONTINUE
        return Outcome.QUIT if action is Action.QUIT else Outcome.STOP

    def say(self, text: str, error: bool = False) -> None:
        self.message = text
        self.error = error
