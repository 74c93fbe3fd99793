"""guards: which output paths overlap an input, and when an empty result is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoflow.guards import EmptyResult, OutputConflict, check_outputs, count_rows, keep_nonempty


@pytest.mark.parametrize(
    ("out", "relation"),
    [("in", "is"), (".", "contains"), ("in/sub", "lies inside"), ("in/../in", "is"),
     ("in2", None), ("out/in", None)],
)  # fmt: skip
def test_relations(out: str, relation: str | None, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    outputs = {"out": tmp_path / out}
    if relation is None:
        check_outputs({"data": tmp_path / "in"}, outputs)
        return
    with pytest.raises(OutputConflict, match=f"output out .* {relation} the input data "):
        check_outputs({"data": tmp_path / "in"}, outputs)


def test_symlinks_count_both_ways(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "data")  # an output naming the input's folder
    with pytest.raises(OutputConflict, match="is the input"):
        check_outputs({"data": tmp_path / "data"}, {"out": tmp_path / "alias"})
    # An input reached through a link inside the output: replacing the output deletes the link.
    (tmp_path / "data" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputConflict, match="contains the input"):
        check_outputs({"data": tmp_path / "data" / "link"}, {"out": tmp_path / "data"})


def test_the_plainest_relation_is_named_and_none_paths_are_skipped(tmp_path: Path) -> None:
    inputs = {"folder": tmp_path / "m", "file": tmp_path / "m" / "model.pt", "unset": None}
    with pytest.raises(OutputConflict, match="is the input file"):
        check_outputs(inputs, {"metrics": tmp_path / "m" / "model.pt", "plots": None})


def test_outputs_must_not_overlap(tmp_path: Path) -> None:
    with pytest.raises(OutputConflict, match="outputs must not overlap"):
        check_outputs({}, {"report": tmp_path / "r", "out": tmp_path / "r" / "v"})


def test_keep_nonempty(tmp_path: Path) -> None:
    table = tmp_path / "out" / "t.csv"
    keep_nonempty("stage", table, 0)  # nothing before: an empty result is fine
    table.parent.mkdir()
    table.write_text("a,excluded\n1,\n2,yes\n")
    assert count_rows(table) == 2
    assert count_rows(table, lambda r: not r["excluded"]) == 1
    keep_nonempty("stage", table, 3)
    with pytest.raises(EmptyResult, match=r"stage produced nothing \(why\), .* holds 1 row from"):
        keep_nonempty("stage", table, 0, "why", lambda r: not r["excluded"])
    table.write_text("a,excluded\n2,yes\n")
    keep_nonempty("stage", table, 0, "why", lambda r: not r["excluded"])  # none usable before
    table.write_bytes(b"\xff\xfe\x00")  # unreadable: nothing worth keeping
    keep_nonempty("stage", table, 0)
