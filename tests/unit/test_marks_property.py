"""Property tests of the marks parser: any text gives a valid Marks or one InputError, never a
crash, and the integer rule is the one rule everywhere marks are read."""

from __future__ import annotations

import string
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from emoflow.errors import InputError
from emoflow.ingest.marks import FIELD_NAMES, FLAG_NAMES, Marks, parse_int, parse_marks
from emoflow.validation.table import _lenient_fields

# Tokens near the rule's edges: signs, Unicode digits and super/subscripts, blanks, long runs.
EDGY = st.sampled_from(["-", "--", "+", "²", "٣", "७", "₃", "½", "0", "-0", "1e3", "0x1",
                        " ", "\u00a0", "1_000", "9" * 19, "9" * 5000])  # fmt: skip
TOKEN = st.one_of(st.integers(-10**6, 10**6).map(str), EDGY, st.text(max_size=6),
                  st.lists(EDGY, min_size=1, max_size=3).map("".join))  # fmt: skip


def _check(marks: Marks, frame_count: int | None) -> None:
    assert marks.problems(frame_count) == []
    assert 0 <= marks.start <= marks.peak <= marks.end
    assert all(marks.flags[f] in (0, 1) for f in FLAG_NAMES)


@settings(max_examples=400, deadline=None, database=None)
@given(st.text(max_size=80), st.one_of(st.none(), st.integers(0, 500)))
def test_any_text_is_marks_or_one_input_error(text: str, frame_count: int | None) -> None:
    try:
        marks = parse_marks(text, "m.txt", frame_count)
    except InputError as exc:
        assert str(exc).startswith("m.txt") and "\n" not in exc.rule
        return
    _check(marks, frame_count)


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(TOKEN, min_size=8, max_size=8), st.sampled_from(["\n", "\r\n", ""]))
def test_eight_tokens_parse_only_as_strict_integers(tokens: list[str], end: str) -> None:
    text = "\t".join(tokens) + end
    strict = all(parse_int(t) is not None for t in tokens)
    try:
        marks = parse_marks(text, "m.txt")
    except InputError as exc:
        assert "\n" not in str(exc)
        if not strict:
            return
        assert "must be an integer" not in exc.rule  # a strict integer is never called one
        return
    assert strict
    _check(marks, None)
    assert [str(v) for v in (marks.start, marks.end, marks.peak)] == [
        str(int(t.strip())) for t in tokens[:3]]  # fmt: skip


@settings(database=None)  # no example folder in the repository
@given(st.text(max_size=30))
def test_parse_int_is_ascii_digits_with_an_optional_minus(text: str) -> None:
    value = parse_int(text)
    token = text.strip()
    body = token[1:] if token.startswith("-") else token
    expected = bool(body) and len(body) <= 18 and all(c in string.digits for c in body)
    assert (value is not None) == expected
    if value is not None:
        assert value == int(token)


@settings(database=None)
@given(st.integers(0, 400), st.integers(0, 400), st.integers(0, 400),
       st.lists(st.integers(0, 1), min_size=5, max_size=5))  # fmt: skip
def test_valid_marks_round_trip(a: int, b: int, c: int, flags: list[int]) -> None:
    start, peak, end = sorted((a, b, c))
    marks = Marks(start, end, peak, *flags)
    assert parse_marks(marks.to_line() + "\n", "m.txt", end + 1) == marks


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(TOKEN, min_size=8, max_size=8))
def test_the_gate_table_reads_marks_by_the_same_rule(tmp_path_factory, tokens: list[str]
                                                     ) -> None:  # fmt: skip
    path: Path = tmp_path_factory.mktemp("m") / "p001_001.txt"
    path.write_text("\t".join(tokens) + "\n", encoding="utf-8")
    values = _lenient_fields(path)
    strict = [parse_int(t) for t in tokens]
    assert values == (None if None in strict else strict)
    assert len(FIELD_NAMES) == len(tokens)
