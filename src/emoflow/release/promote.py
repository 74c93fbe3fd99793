"""``emoflow promote``: ``@champion`` moves to the challenger only when it wins on today's test set.

Both versions are downloaded from the registry and scored now, through the inference core (the
backend that would serve them), on the same current test manifest and face files: no number
recorded at registration is trusted, since the test set may have changed since. The metric is
``emoflow.training.metrics``'s (UAR by default). The challenger must beat the champion by at
least ``min_delta``; a tie within the margin keeps the champion. The first version registered
becomes champion. The decision and both scores go to version tags and
``reports/promotion-<model>.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoflow.datasets.clips import read_manifest
from emoflow.errors import EmoflowError, InputError
from emoflow.fsio import atomic_write_text
from emoflow.layout import LAYOUT, Layout
from emoflow.release.registry import registered_name
from emoflow.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    client,
    fetch,
    get_version,
    global_uris,
)
from emoflow.tracking.store import RegistryError, registry_uri, store_errors
from emoflow.training.checkpoint import files_fingerprint
from emoflow.training.metrics import SUMMARY_METRICS, classification_report

log = logging.getLogger(__name__)

EXIT_NOT_PROMOTED = 3
DEFAULT_MANIFEST = LAYOUT.manifest("test")
DEFAULT_FACES = LAYOUT.faces


def report_path_for(arch: str, repo: Path = Path(".")) -> Path:
    """Where a promotion decision is recorded: one file per model, the CLI and the flow alike."""
    return Layout(repo).promotion_report(arch)


METRIC_LABELS = {"war": "WAR", "uar": "UAR", "macro_f1": "macro-F1"}
# Floating-point slack for "wins by at least the margin": 0.615 - 0.61 is 0.00499999...
EPS = 1e-9


@dataclass(frozen=True)
class Decision:
    """What ``promote`` decided: ``first``, ``promoted``, ``kept`` or ``unchanged`` (the
    challenger already is the champion)."""

    outcome: str
    message: str
    record: dict[str, Any]

    @property
    def promoted(self) -> bool:
        return self.outcome in ("first", "promoted")


@global_uris()  # MLflow's stores build their own clients from the global URIs
@store_errors()
def promote(arch: str, metric: str = "uar", min_delta: float = 0.005,
            manifest: Path = DEFAULT_MANIFEST, faces_dir: Path = DEFAULT_FACES,
            report_path: Path | None = None, backend: str = "auto",
            challenger: str | None = None) -> Decision:  # fmt: skip
    """Score ``@challenger`` (or version ``challenger``) and ``@champion`` and decide.

    Moves ``@champion`` when the challenger is the first version to be scored or wins by at
    least ``min_delta``; tags the challenger with the decision and both scores (and a replaced
    champion with ``promotion.replaced_by``); writes ``report_path`` atomically (default
    ``reports/promotion-<arch>.json``, where the retrain flow writes it too).
    """
    report_path = report_path or report_path_for(arch)
    if metric not in SUMMARY_METRICS:
        raise EmoflowError(f"unknown metric {metric!r}: one of {', '.join(SUMMARY_METRICS)}")
    check_min_delta(min_delta)
    name = registered_name(arch)
    c = client(writable=True)  # aliases and tags are written
    chal = get_version(f"models:/{name}/{challenger}" if challenger
                       else f"models:/{name}@{CHALLENGER}", c)  # fmt: skip
    champ = _champion(c, name)
    if champ is not None and str(champ.version) == str(chal.version):
        message = f"v{chal.version} is already {CHAMPION}: nothing to decide"
        record = {"model": arch, "registered_model": name, "registry": registry_uri(),
                  "outcome": "unchanged", "promoted": False, "message": message,
                  "challenger": {"version": str(chal.version)}, "time": _now()}  # fmt: skip
        atomic_write_text(report_path, json.dumps(record, indent=1))
        log.info("promote: %s", message)
        return Decision("unchanged", message, record)

    test = {"manifest": str(manifest), "faces": str(faces_dir)}
    chal_score = score_version(name, str(chal.version), manifest, faces_dir, backend)
    champ_score = (score_version(name, str(champ.version), manifest, faces_dir, backend)
                   if champ is not None else None)  # fmt: skip
    test.update(clips=chal_score["n"], fingerprint=chal_score.pop("fingerprint"))
    if champ_score is not None:
        champ_score.pop("fingerprint")
    label = METRIC_LABELS[metric]
    new, old = chal_score[metric], (champ_score or {}).get(metric)
    if champ is None:
        outcome = "first"
        message = f"first model: v{chal.version} ({label} {new:.3f}) is {CHAMPION}"
    elif new - old >= min_delta - EPS:
        outcome = "promoted"
        message = (f"promoted v{chal.version} ({label} {new:.3f}) over {CHAMPION} "
                   f"v{champ.version} ({old:.3f}), margin {min_delta}")  # fmt: skip
    else:
        outcome = "kept"
        message = (f"kept {CHAMPION} v{champ.version} ({label} {old:.3f}) over "
                   f"v{chal.version} ({new:.3f}), margin {min_delta}")  # fmt: skip

    record = {
        "model": arch, "registered_model": name, "registry": registry_uri(),
        "outcome": outcome, "promoted": outcome in ("first", "promoted"), "message": message,
        "metric": metric, "min_delta": min_delta, "backend": backend, "test": test,
        "challenger": {"version": str(chal.version), **chal_score},
        "champion": ({"version": str(champ.version), **champ_score}
                     if champ is not None else None),
        "time": _now(),
    }  # fmt: skip
    if record["promoted"]:
        c.set_registered_model_alias(name, CHAMPION, str(chal.version))
        if champ is not None:
            c.set_model_version_tag(name, str(champ.version), "promotion.replaced_by",
                                    str(chal.version))  # fmt: skip
    for key, value in _tags(record).items():
        c.set_model_version_tag(name, str(chal.version), key, value)
    atomic_write_text(report_path, json.dumps(record, indent=1))
    log.info("promote: %s → %s", message, report_path)
    return Decision(outcome, message, record)


def check_min_delta(min_delta: float) -> None:
    """A margin is a finite number ≥ 0: NaN would compare false both ways (never promote, or
    always, by the comparison's direction) and infinity would freeze the champion."""
    if not math.isfinite(min_delta) or min_delta < 0:
        raise EmoflowError(f"--min-delta must be a finite number ≥ 0, got {min_delta}")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _champion(c: Any, name: str) -> Any:
    """The ``@champion`` version, or None when there is none yet."""
    try:
        return get_version(f"models:/{name}@{CHAMPION}", c)
    except RegistryError:
        return None


def score_version(name: str, version: str, manifest: Path, faces_dir: Path,
                  backend: str = "auto") -> dict[str, Any]:  # fmt: skip
    """Version ``version`` on the clips of ``manifest``, through the inference core: WAR, UAR,
    macro-F1, per-class recall, the number of clips and a fingerprint of the test files."""
    from tqdm import tqdm

    from emoflow.inference import Predictor

    folder = fetch(f"models:/{name}/{version}").folder
    predictor = Predictor.from_dir(folder, backend, name=name, version=version)
    refs = read_manifest(manifest, faces_dir, predictor.classes)
    if not refs:
        raise InputError(manifest, "no clips: nothing to score the models on")
    step = predictor.batch_size
    predicted = []
    with tqdm(total=len(refs), desc=f"{name} v{version}", unit="clip") as bar:
        for start in range(0, len(refs), step):
            chunk = refs[start : start + step]
            results = predictor.predict_face_files([r.path for r in chunk])
            predicted += [predictor.classes.index(r.label) for r in results]
            bar.update(len(chunk))
    report = classification_report([r.label for r in refs], predicted, predictor.classes)
    log.info("promote: %s v%s on %d clips (%s): WAR %.3f, UAR %.3f, macro-F1 %.3f", name,
             version, len(refs), predictor.backend, report["war"], report["uar"],
             report["macro_f1"])  # fmt: skip
    return {**{k: report[k] for k in SUMMARY_METRICS}, "n": report["n"],
            "backend": predictor.backend,
            "recall": {c: r["recall"] for c, r in report["per_class"].items()},
            "fingerprint": files_fingerprint([manifest, *(r.path for r in refs)])}  # fmt: skip


def _tags(record: dict[str, Any]) -> dict[str, str]:
    """The decision as the challenger's version tags (``promotion.*``)."""
    metric = record["metric"]
    tags = {
        "promotion.outcome": record["outcome"],
        "promotion.metric": metric,
        "promotion.min_delta": str(record["min_delta"]),
        "promotion.score": f"{record['challenger'][metric]:.6f}",
        "promotion.test_clips": str(record["test"]["clips"]),
        "promotion.test_fingerprint": record["test"]["fingerprint"],
        "promotion.time": record["time"],
    }
    if record["champion"] is not None:
        tags["promotion.champion_version"] = record["champion"]["version"]
        tags["promotion.champion_score"] = f"{record['champion'][metric]:.6f}"
    return tags


def exit_code(decision: Decision, require_promotion: bool) -> int:
    """0, or 3 when ``--require-promotion`` and ``@champion`` did not move to the challenger."""
    return EXIT_NOT_PROMOTED if require_promotion and not decision.promoted else 0

