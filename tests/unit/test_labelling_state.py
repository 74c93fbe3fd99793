"""The labelling core driven by scripted key sequences, as the window would feed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoflow.ingest.marks import Marks, read_marks, write_marks
from emoflow.labelling.keys import ESC, Action, action_for_key
from emoflow.labelling.state import Labeller, Outcome

RIGHT, LEFT, UP, HOME, END = 0xFF53, 0xFF51, 0xFF52, 0xFF50, 0xFF57


def codes(script: str) -> list[int]:
    """'3d s' → three D presses then S; spaces are ignored, digits repeat the next key."""
    out: list[int] = []
    repeat = ""
    for ch in script.replace(" ", ""):
        if ch.isdigit():
            repeat += ch
            continue
        out += [ord(ch)] * int(repeat or 1)
        repeat = ""
    return out


def press_all(lab: Labeller, script: str | list[int]) -> list[Outcome]:
    keys = codes(script) if isinstance(script, str) else script
    return [lab.press(k) for k in keys]


def make(frames: int = 30, marks: Marks | None = None, sink: list[Marks] | None = None) -> Labeller:
    store = sink if sink is not None else []
    return Labeller(frames, store.append, marks=marks)


def test_start_end_peak_then_save_writes_the_exact_marks_file(tmp_path: Path) -> None:
    path = tmp_path / "marks" / "p001_000.txt"
    lab = Labeller(30, lambda m: write_marks(path, m, 30))
    press_all(lab, "3d s 20d s 10a s e")  # start 3, end 23, peak 13
    assert path.read_text() == "3\t23\t13\t0\t0\t0\t0\t0\n"
    assert lab.saved == Marks(3, 23, 13) and not lab.dirty and not lab.error
    assert [p.name for p in path.parent.iterdir()] == ["p001_000.txt"]  # no temp file left


def test_flags_toggle_and_are_saved() -> None:
    sink: list[Marks] = []
    lab = make(sink=sink)
    press_all(lab, "s d s s  g g  t u p x  e")
    assert sink == [
        Marks(
            0, 1, 1, non_correlating=0, abnormal_limb=1, low_occlusion=1, heavy_occlusion=1, other=1
        )
    ]
    assert lab.active_flags == ["abnormal_limb", "low_occlusion", "heavy_occlusion", "other"]


@pytest.mark.parametrize(
    ("script", "missing"),
    [("e", "start, end, peak"), ("s e", "end, peak"), ("s d s e", "peak")],
)
def test_save_refuses_missing_marks_and_writes_nothing(script: str, missing: str) -> None:
    sink: list[Marks] = []
    lab = make(sink=sink)
    press_all(lab, script)
    assert sink == []
    assert lab.error and f"mark {missing} first" in lab.message


def test_end_before_start_and_peak_outside_are_refused() -> None:
    lab = make()
    press_all(lab, "5d s 2a s")
    assert lab.marks == {"start": 5, "end": None, "peak": None}
    assert lab.error and "before start" in lab.message
    press_all(lab, "4d s")  # end at 7
    press_all(lab, "d s")  # peak at 8 > end
    assert lab.marks["peak"] is None and "between start 5 and end 7" in lab.message
    press_all(lab, "2a s")  # peak at 6
    assert lab.marks == {"start": 5, "end": 7, "peak": 6} and not lab.error
    press_all(lab, "s")
    assert lab.error and "W resets" in lab.message
    assert lab.marks == {"start": 5, "end": 7, "peak": 6}


def test_one_frame_segment_is_allowed() -> None:
    sink: list[Marks] = []
    press_all(make(sink=sink), "4d s s s e")
    assert sink == [Marks(4, 4, 4)]


def test_reset_clears_marks_and_flags() -> None:
    lab = make()
    press_all(lab, "s d s s g w")
    assert lab.marks == {"start": None, "end": None, "peak": None}
    assert lab.active_flags == [] and lab.next_mark == "start"


def test_quit_with_unsaved_changes_asks_for_a_second_press() -> None:
    lab = make()
    assert press_all(lab, "s q") == [Outcome.CONTINUE, Outcome.CONTINUE]
    assert lab.error and "unsaved" in lab.message
    assert lab.press(ord("q")) is Outcome.QUIT


def test_another_key_cancels_the_pending_quit() -> None:
    lab = make()
    assert press_all(lab, "s q d q") == [Outcome.CONTINUE] * 4
    assert lab.press(ord("q")) is Outcome.QUIT


def test_quit_and_stop_are_immediate_when_saved_or_untouched() -> None:
    assert make().press(ord("q")) is Outcome.QUIT
    assert make().press(ESC) is Outcome.STOP
    lab = make()
    assert press_all(lab, "s s s e q")[-1] is Outcome.QUIT


def test_escape_with_unsaved_changes_needs_confirmation() -> None:
    lab = make()
    assert press_all(lab, "g") == [Outcome.CONTINUE]
    assert lab.press(ESC) is Outcome.CONTINUE
    assert lab.press(ESC) is Outcome.STOP


def test_stepping_clamps_and_jumps() -> None:
    lab = make(frames=30)
    press_all(lab, "a")
    assert lab.frame == 0
    press_all(lab, "100d")  # a held key: auto-repeat sends many presses
    assert lab.frame == 29
    press_all(lab, "b")
    assert lab.frame == 19
    press_all(lab, [HOME])
    assert lab.frame == 0
    press_all(lab, [UP, RIGHT, RIGHT, LEFT])
    assert lab.frame == 11
    press_all(lab, [END, ord("f")])
    assert lab.frame == 29


def test_keys_ignore_case_and_gtk_modifier_bits() -> None:
    assert action_for_key(ord("D")) is Action.FORWARD
    assert action_for_key(0x10 << 16 | ord("d")) is Action.FORWARD  # Num Lock on, GTK
    assert action_for_key(0x270000) is Action.FORWARD  # Windows right arrow
    assert action_for_key(ord("z")) is None
    assert action_for_key(-1) is None
    lab = make()
    assert lab.press(ord("z")) is Outcome.CONTINUE and lab.frame == 0


def test_reopened_clip_starts_from_saved_marks(tmp_path: Path) -> None:
    path = tmp_path / "p001_000.txt"
    write_marks(path, Marks(2, 9, 4, low_occlusion=1), 30)
    lab = Labeller(30, lambda m: write_marks(path, m, 30), marks=read_marks(path, 30))
    assert lab.marks == {"start": 2, "end": 9, "peak": 4}
    assert lab.active_flags == ["low_occlusion"] and not lab.dirty and lab.next_mark is None
    assert press_all(lab, "u x e q")[-1] is Outcome.QUIT
    assert read_marks(path) == Marks(2, 9, 4, other=1)


def test_reset_of_saved_marks_keeps_the_file_until_saved(tmp_path: Path) -> None:
    path = tmp_path / "p001_000.txt"
    write_marks(path, Marks(2, 9, 4), 30)
    lab = Labeller(30, lambda m: write_marks(path, m, 30), marks=read_marks(path))
    press_all(lab, "w e")
    assert lab.error and lab.dirty
    assert press_all(lab, "q q")[-1] is Outcome.QUIT
    assert path.read_text() == "2\t9\t4\t0\t0\t0\t0\t0\n"


def test_a_failing_save_is_reported_not_raised() -> None:
    def broken(_: Marks) -> None:
        raise OSError("disk full")

    lab = Labeller(30, broken)
    press_all(lab, "s s s e")
    assert lab.saved is None and lab.error and "disk full" in lab.message and lab.dirty


def test_rejects_empty_clip_and_bad_jump() -> None:
    with pytest.raises(ValueError):
        Labeller(0, lambda m: None)
    with pytest.raises(ValueError):
        Labeller(10, lambda m: None, jump=0)
