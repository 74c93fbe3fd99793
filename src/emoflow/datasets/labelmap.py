"""``--label-map``: dataset labels (or codes) → the project's classes, or ``drop``, explicitly.

A YAML mapping, e.g. RAVDESS ``{"01": neutral, "02": drop, "03": happiness, ...}``. Keys are
compared as text, lower-cased, numbers without leading zeros (YAML reads ``01`` as 1, and
datasets write ``06`` or ``6``). A label the data has but the map lacks is an error listing every
such label: a map that silently dropped a class would change the task unnoticed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import yaml

from emoflow.datasets.sources.base import SourceClip
from emoflow.errors import InputError

DROP = "drop"


def label_key(label: object) -> str:
    text = str(label).strip().lower()
    return str(int(text)) if text.isdigit() else text


def load_label_map(path: Path, classes: tuple[str, ...]) -> dict[str, str]:
    """The map, checked: every value one of ``classes`` or ``drop``, no key given twice."""
    if not path.is_file():
        raise InputError(path, "no label map file here")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(path, f"not valid YAML ({getattr(exc, 'problem', exc)})",
                         f"line {mark.line + 1}" if mark else None) from None  # fmt: skip
    if not isinstance(data, dict) or not data:
        raise InputError(path, "must be a YAML mapping: dataset label or code -> class or drop")
    out: dict[str, str] = {}
    for k, v in data.items():
        key, value = label_key(k), str(v).strip().lower()
        if value not in (*classes, DROP):
            raise InputError(path, f"maps to {v!r}, which is not one of the classes "
                             f"({', '.join(classes)}) nor {DROP}", f"key {k!r}")  # fmt: skip
        if key in out and out[key] != value:
            raise InputError(path, f"given twice ({out[key]} and {value})", f"key {k!r}")
        out[key] = value
    return out


def apply_label_map(clips: list[SourceClip], mapping: dict[str, str], path: Path
                    ) -> tuple[list[SourceClip], Counter[str]]:  # fmt: skip
    """The clips relabelled, less the dropped ones (counted per dataset label)."""
    unmapped = Counter(c.label for c in clips if label_key(c.label) not in mapping)
    if unmapped:
        listed = ", ".join(f"{k!r} ({n} clips)" for k, n in sorted(unmapped.items()))
        raise InputError(path, f"labels in the data that the map does not name: {listed}; map "
                         f"each to a class or to {DROP}")  # fmt: skip
    kept, dropped = [], Counter[str]()
    for c in clips:
        target = mapping[label_key(c.label)]
        if target == DROP:
            dropped[c.label] += 1
        else:
            kept.append(replace(c, label=target))
    return kept, dropped
