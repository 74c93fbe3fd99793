"""Key codes → actions: the thesis's keys (Table 2) plus a few conveniences."""

from __future__ import annotations

from enum import Enum

from emoflow.ingest.marks import FLAG_NAMES


class Action(Enum):
    FORWARD = "forward"
    BACK = "back"
    JUMP_FORWARD = "jump_forward"
    JUMP_BACK = "jump_back"
    FIRST = "first"
    LAST = "last"
    MARK = "mark"
    SAVE = "save"
    QUIT = "quit"
    STOP = "stop"
    RESET = "reset"
    FLAG_NON_CORRELATING = "non_correlating"
    FLAG_ABNORMAL_LIMB = "abnormal_limb"
    FLAG_LOW_OCCLUSION = "low_occlusion"
    FLAG_HEAVY_OCCLUSION = "heavy_occlusion"
    FLAG_OTHER = "other"

    @property
    def flag(self) -> str | None:
        """The marks flag this action toggles, if it is a flag key."""
        return self.value if self.value in FLAG_NAMES else None


# Letters are matched case-insensitively: Caps Lock must not change what a key does.
LETTERS: dict[str, Action] = {
    "d": Action.FORWARD,
    "a": Action.BACK,
    "s": Action.MARK,
    "e": Action.SAVE,
    "q": Action.QUIT,
    "w": Action.RESET,
    "g": Action.FLAG_NON_CORRELATING,
    "t": Action.FLAG_ABNORMAL_LIMB,
    "u": Action.FLAG_LOW_OCCLUSION,
    "p": Action.FLAG_HEAVY_OCCLUSION,
    "x": Action.FLAG_OTHER,
    # not in the thesis: larger jumps (--jump frames)
    "f": Action.JUMP_FORWARD,
    "b": Action.JUMP_BACK,
}

ESC = 27
# cv2.waitKeyEx returns X keysyms for special keys with both the GTK and the Qt backend on
# Linux, and virtual-key codes shifted by 16 bits on Windows.
SPECIAL: dict[int, Action] = {
    ESC: Action.STOP,
    0xFF53: Action.FORWARD,  # Right
    0xFF51: Action.BACK,  # Left
    0xFF52: Action.JUMP_FORWARD,  # Up
    0xFF54: Action.JUMP_BACK,  # Down
    0xFF55: Action.JUMP_BACK,  # Page Up
    0xFF56: Action.JUMP_FORWARD,  # Page Down
    0xFF50: Action.FIRST,  # Home
    0xFF57: Action.LAST,  # End
    0x270000: Action.FORWARD,
    0x250000: Action.BACK,
    0x260000: Action.JUMP_FORWARD,
    0x280000: Action.JUMP_BACK,
    0x240000: Action.FIRST,
    0x230000: Action.LAST,
}

FLAG_KEYS: dict[str, str] = {
    name: key.upper() for key, action in LETTERS.items() if (name := action.flag) is not None
}

HELP: tuple[str, ...] = (
    "D/A frame  F/B jump {jump}  S mark start/end/peak  E save  W reset  Q next clip  Esc stop",
    "flags: G non-correlating  T limbs  U occl >30%  P occl >60%  X other",
)


def action_for_key(code: int) -> Action | None:
    """The action of a key code from ``cv2.waitKeyEx`` (None for unbound keys and -1)."""
    if code < 0:
        return None
    if code in SPECIAL:
        return SPECIAL[code]
    # The GTK backend puts the modifier state (Num Lock, Caps Lock, ...) in the high bits.
    low = code & 0xFFFF
    if low in SPECIAL:
        return SPECIAL[low]
    return LETTERS.get(chr(low).lower()) if low < 0x80 else None
