from pathlib import Path

import pytest

from emoflow.errors import InputError
from emoflow.ingest.marks import Marks, marks_path, parse_marks, read_marks, write_marks


def test_round_trip_keeps_exact_format(tmp_path: Path) -> None:
    m = Marks(3, 89, 43, non_correlating=1)
    p = marks_path(tmp_path, "p007_012")
    write_marks(p, m)
    assert p.read_text() == "3\t89\t43\t1\t0\t0\t0\t0\n"
    assert read_marks(p) == m
    assert m.flags == {"non_correlating": 1, "abnormal_limb": 0, "low_occlusion": 0,
                       "heavy_occlusion": 0, "other": 0}  # fmt: skip


def test_trailing_blank_lines_and_crlf_are_accepted() -> None:
    assert parse_marks("1\t5\t3\t0\t0\t0\t0\t0\r\n\n") == Marks(1, 5, 3)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "empty marks file"),
        ("3\t89\t43\t1\t0\t0\t0", "expected 8 tab-separated fields"),
        ("3 89 43 1 0 0 0 0", "expected 8 tab-separated fields"),
        ("3\t89\t4.5\t1\t0\t0\t0\t0", "field peak must be an integer"),
        ("3\t89\tx\t1\t0\t0\t0\t0", "field peak must be an integer"),
        ("90\t89\t43\t0\t0\t0\t0\t0", "start <= peak <= end"),
        ("3\t89\t95\t0\t0\t0\t0\t0", "start <= peak <= end"),
        ("-1\t89\t43\t0\t0\t0\t0\t0", "start must be >= 0"),
        ("3\t89\t43\t2\t0\t0\t0\t0", "flag non_correlating must be 0 or 1"),
        ("3\t89\t43\t0\t0\t0\t0\t0\n3\t89\t43\t0\t0\t0\t0\t0", "exactly one line"),
    ],
)
def test_bad_marks_name_file_line_and_rule(text: str, rule: str) -> None:
    with pytest.raises(InputError) as err:
        parse_marks(text, "data/marks/p001_001.txt")
    msg = str(err.value)
    assert msg.startswith("data/marks/p001_001.txt")
    assert rule in msg
    if text:
        assert ":line " in msg


def test_end_must_be_inside_the_clip() -> None:
    with pytest.raises(InputError, match="end must be < frame count 180"):
        parse_marks("3\t180\t43\t0\t0\t0\t0\t0", "m.txt", frame_count=180)
    assert parse_marks("3\t179\t43\t0\t0\t0\t0\t0", frame_count=180).end == 179


def test_invalid_write_is_refused_and_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "p001_001.txt"
    write_marks(p, Marks(1, 9, 5))
    with pytest.raises(InputError, match="refusing to write"):
        write_marks(p, Marks(9, 1, 5))
    assert read_marks(p) == Marks(1, 9, 5)
    assert [f.name for f in tmp_path.iterdir()] == ["p001_001.txt"]  # no temp file left
