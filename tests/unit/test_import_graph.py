"""The package's layers stay layers: no import cycle between emoflow's parts, and the serving
core (inference) and the model folder (artifact) never import training or release.

A part is a subpackage (``emoflow.inference``) or a top-level module (``emoflow.artifact``).
Every import counts, those inside functions too (a lazy import is still an arrow), except those
under ``if TYPE_CHECKING:`` (annotations only, never run). The models registry names each
architecture's training task as ``"module:attribute"``, resolved only when training asks for it:
an entry point, not an import, so it is no arrow here."""

from __future__ import annotations

import ast
from pathlib import Path

import emoflow

SRC = Path(emoflow.__file__).parent
# Arrows that must not exist, whatever else changes: (from, to).
FORBIDDEN = {("inference", "training"), ("inference", "release"), ("artifact", "training"),
             ("artifact", "inference"), ("artifact", "release"), ("tracking", "inference"),
             ("tracking", "release"), ("tracking", "training")}  # fmt: skip
KNOWN_CYCLES: set[tuple[str, str]] = set()  # none left; an entry would need its reason


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "emoflow" and len(parts) > 1 else None


def import_graph() -> dict[tuple[str, str], set[str]]:
    """(from part, to part) → the files that import across that arrow."""
    edges: dict[tuple[str, str], set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        src = rel.stem if len(rel.parts) == 1 else rel.parts[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                       for stmt in block.body for n in ast.walk(stmt)}  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
                if node.module == "emoflow":  # from emoflow import x
                    targets = [f"emoflow.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                dst = _part(t)
                if dst is not None and dst != src:
                    edges.setdefault((src, dst), set()).add(str(rel))
    return edges


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _reaches(edges: dict[tuple[str, str], set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        here = todo.pop()
        for a, b in edges:
            if a == here and b not in seen:
                if b == goal:
                    return True
                seen.add(b)
                todo.append(b)
    return False


def test_the_graph_is_read() -> None:
    edges = import_graph()
    # A broken walk would pass everything: arrows that must exist are found.
    assert ("training", "artifact") in edges and ("release", "inference") in edges
    assert "inference/predictor.py" in edges[("inference", "artifact")]


def test_no_import_cycle_between_parts() -> None:
    edges = import_graph()
    cycles = sorted(f"{a} → {b} ({', '.join(sorted(files))}) closes a cycle"
                    for (a, b), files in edges.items()
                    if (a, b) not in KNOWN_CYCLES and (b, a) not in KNOWN_CYCLES
                    and _reaches(edges, b, a))  # fmt: skip
    assert not cycles, "\n".join(cycles)


def test_no_forbidden_arrow() -> None:
    edges = import_graph()
    found = sorted(f"{a} → {b}: {', '.join(sorted(edges[(a, b)]))}"
                   for a, b in FORBIDDEN if (a, b) in edges)  # fmt: skip
    assert not found, "\n".join(found)
