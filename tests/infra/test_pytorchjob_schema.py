"""The PyTorchJob checked against Kubeflow's own API types, offline.

No validator here loads the Training Operator's CRD, but the operator's Python SDK
(``kubeflow-training``) ships the API's types generated from the same OpenAPI spec, and the
Kubernetes client ships the pod template's. Every key of the manifest must be a field of its
type there and every value of the field's type: a misspelt ``rdzvBackend`` or a number where
the API wants a string fails here, not on the cluster.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from emoflow.config import PipelineKubeflowParams
from emoflow.orchestration import kubeflow

ROOT = Path(__file__).resolve().parents[2]
_PRIMITIVE: dict[str, Any] = {"str": str, "bool": bool, "int": int, "float": (int, float),
                              "datetime": str, "date": str, "object": object}  # fmt: skip


def _model(name: str) -> type:
    import kubeflow.training.models as kf
    import kubernetes.client.models as k8s

    cls = getattr(kf, name, None) or getattr(k8s, name, None)
    if cls is None:
        raise AssertionError(f"no API type {name}")
    return cls


def type_errors(value: Any, type_name: str, path: str = "") -> list[str]:
    """Where ``value`` is not of the API type ``type_name`` (``KubeflowOrgV1PyTorchJob``, …)."""
    if found := re.fullmatch(r"list\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{path}: a list expected, got {type(value).__name__}"]
        return [e for i, v in enumerate(value) for e in type_errors(v, found[1], f"{path}[{i}]")]
    if found := re.fullmatch(r"dict\(str, (.+)\)", type_name):
        if not isinstance(value, dict):
            return [f"{path}: a map expected, got {type(value).__name__}"]
        return [e for k, v in value.items() for e in type_errors(v, found[1], f"{path}.{k}")]
    if type_name in _PRIMITIVE:
        want = _PRIMITIVE[type_name]
        ok = isinstance(value, want) and not (type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: {type_name} expected, got {value!r}"]
    cls = _model(type_name)
    if not isinstance(value, dict):
        return [f"{path}: a {type_name} object expected, got {value!r}"]
    fields = {cls.attribute_map[a]: t for a, t in cls.openapi_types.items()}
    errors = [f"{path}.{k}: no such field in {type_name}" for k in value if k not in fields]
    for key, item in value.items():
        if key in fields:
            errors += type_errors(item, fields[key], f"{path}.{key}")
    return errors


def _rendered_job() -> dict[str, Any]:
    kubectl = Path(sys.executable).parent / "kubectl"
    done = subprocess.run([str(kubectl), "kustomize", "infra/training"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return next(d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "PyTorchJob")


def test_the_training_job_is_of_kubeflows_pytorchjob_type() -> None:
    job = _rendered_job()
    assert type_errors(job, "KubeflowOrgV1PyTorchJob") == []
    assert job["apiVersion"] == "kubeflow.org/v1"


@pytest.mark.parametrize("gpus", [0, 4])
def test_every_job_the_flow_renders_is_of_that_type(gpus: int) -> None:
    cmd = kubeflow.stage_command(ROOT / "dvc.yaml", "deep_emotion")
    job = kubeflow.render_job("deep_emotion", PipelineKubeflowParams(gpus_per_node=gpus), cmd,
                              labels={"emoflow.flow-run": "0f1e"})  # fmt: skip
    assert type_errors(job, "KubeflowOrgV1PyTorchJob") == []


def test_the_check_names_a_misspelt_field_and_a_wrong_type() -> None:
    job = _rendered_job()
    job["spec"]["elasticPolicy"]["rdzvBackEnd"] = job["spec"]["elasticPolicy"].pop("rdzvBackend")
    job["spec"]["nprocPerNode"] = 4
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    pod["containers"][0]["volumeMount"] = pod["containers"][0].pop("volumeMounts")
    assert type_errors(job, "KubeflowOrgV1PyTorchJob") == [
        ".spec.elasticPolicy.rdzvBackEnd: no such field in KubeflowOrgV1ElasticPolicy",
        ".spec.nprocPerNode: str expected, got 4",
        ".spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].volumeMount: "
        "no such field in V1Container",
    ]
