"""A dataset's own splits: ``split`` in a manifest, ``--folds-from`` fold lists.

Published results are measured on the dataset's folds (DFEW's 5, the FAN CK+ 10-fold list);
drawing new ones makes numbers incomparable. A fold file (CSV, or TSV by its extension) has a
``fold`` column and one key column: ``subject`` (every clip of that subject), ``trial_id``, or
``path`` (the clip's video, folder or image, relative to the fold file). Fold ``f`` tests on its
clips; of the others, a ``val / (train + val)`` share of subjects validates (as ``emoflow
split`` does). Every imported clip must be in exactly one fold.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

from emoflow.config import SplitParams
from emoflow.datasets.sources.base import SourceClip, ext, natural_key
from emoflow.datasets.splits import SETS, Plan, Sets, _train_val, plan_splits
from emoflow.errors import InputError

log = logging.getLogger(__name__)

KEYS = ("subject", "trial_id", "path")


def _key_of(key: str) -> Callable[[SourceClip], str]:
    if key == "subject":
        return lambda c: c.subject
    if key == "trial_id":
        return lambda c: c.trial_id
    return lambda c: str(c.where.resolve())


def read_folds(path: Path, clips: list[SourceClip]) -> dict[str, str]:
    """``trial_id → fold`` for every clip, from the fold file (an error names what is off)."""
    if not path.is_file():
        raise InputError(path, "no fold file here")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t" if ext(path) in ("tsv", "tab") else ",")
        columns = [c.strip() for c in reader.fieldnames or []]
        keys = [k for k in KEYS if k in columns]
        if "fold" not in columns or len(keys) != 1:
            raise InputError(path, f"needs a fold column and one of {', '.join(KEYS)}; has "
                             f"{columns}", "row 1")  # fmt: skip
        reader.fieldnames = columns
        key = keys[0]
        given: dict[str, str] = {}
        for n, row in enumerate(reader, start=2):
            k, fold = (row[key] or "").strip(), (row["fold"] or "").strip()
            if not k or not fold:
                raise InputError(path, f"{key} and fold must not be empty", f"row {n}")
            if key == "path":
                k = str((path.parent / k).resolve())
            if given.setdefault(k, fold) != fold:
                raise InputError(path, f"{key} {row[key].strip()!r} is in fold {given[k]} and "
                                 f"fold {fold}", f"row {n}")  # fmt: skip
    key_of = _key_of(key)
    out: dict[str, str] = {}
    missing: list[str] = []
    for c in clips:
        fold = given.get(key_of(c))
        if fold is None:
            missing.append(str(c.where))
        else:
            out[c.trial_id] = fold
    if missing:
        raise InputError(path, f"{len(missing)} of {len(clips)} clips are in no fold (by "
                         f"{key}), e.g. {', '.join(missing[:3])}")  # fmt: skip
    unused = len(set(given) - {key_of(c) for c in clips})
    if unused:
        log.warning("import: %d %s entries of %s match no imported clip (dropped labels?)",
                    unused, key, path)  # fmt: skip
    return out


def given_plan(set_of: dict[str, str] | None, fold_of: dict[str, str] | None) -> Plan:
    """:func:`~emoflow.datasets.splits.plan_splits` with the given sets and folds kept."""

    def plan(rows: list[dict], params: SplitParams) -> tuple[Sets, list[Sets]]:
        sets: Sets = {}
        folds: list[Sets] = []
        draw_folds = not fold_of and params.folds >= 2
        if set_of is None or draw_folds:
            sets, folds = plan_splits(rows, params if draw_folds else
                                      params.model_copy(update={"folds": 0}))  # fmt: skip
        if set_of is not None:
            sets = {s: [r for r in rows if set_of[r["trial_id"]] == s] for s in SETS}
        if fold_of:
            names = sorted(set(fold_of.values()), key=natural_key)
            folds = []
            for name in names:
                test = [r for r in rows if fold_of[r["trial_id"]] == name]
                rest = [r for r in rows if fold_of[r["trial_id"]] != name]
                leak = {r["participant"] for r in test} & {r["participant"] for r in rest}
                if leak:
                    log.warning("import: fold %s shares %d subjects with the other folds (the "
                                "dataset's own list): not subject-independent", name, len(leak))
                folds.append({**_train_val(rest, params), "test": test})
        return sets, folds

    return plan
