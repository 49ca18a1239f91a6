"""Lean decoding of the status sync's list responses: only the fields status rules read.

A pool's Deployment and Pod lists carry every object whole (pod specs with containers, env,
volumes, managed fields...), and decoding all of it with `json.loads` was 40% of a sync cycle
at 10,000 deployments. msgspec decodes straight into the TypedDicts below and skips every key
they don't declare, so the rest of the driver keeps reading plain dicts with `.get()`.
Field names follow the Kubernetes API reference (apps/v1 Deployment, core/v1 Pod:
kubernetes.io/docs/reference/kubernetes-api/); add a field here before a status rule reads it.
"""

from __future__ import annotations

from typing import Any, TypedDict

import msgspec

from deployments.kube.client import REQUEST_TIMEOUT, classify


class Meta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    labels: dict[str, str]
    annotations: dict[str, str]
    creationTimestamp: str
    deletionTimestamp: str


class Condition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    lastUpdateTime: str


class DeploymentSpec(TypedDict, total=False):
    replicas: int


class DeploymentStatus(TypedDict, total=False):
    observedGeneration: int
    replicas: int
    readyReplicas: int
    availableReplicas: int
    updatedReplicas: int
    unavailableReplicas: int
    conditions: list[Condition]


class LeanDeployment(TypedDict, total=False):
    metadata: Meta
    spec: DeploymentSpec
    status: DeploymentStatus


class StateDetail(TypedDict, total=False):
    reason: str
    message: str
    exitCode: int
    startedAt: str
    finishedAt: str


class ContainerState(TypedDict, total=False):
    waiting: StateDetail
    running: StateDetail
    terminated: StateDetail


class ContainerStatus(TypedDict, total=False):
    name: str
    ready: bool
    started: bool
    restartCount: int
    state: ContainerState
    lastState: ContainerState


class PodSpec(TypedDict, total=False):
    nodeName: str


class PodStatus(TypedDict, total=False):
    phase: str
    reason: str
    message: str
    startTime: str
    conditions: list[Condition]
    initContainerStatuses: list[ContainerStatus]
    containerStatuses: list[ContainerStatus]


class LeanPod(TypedDict, total=False):
    metadata: Meta
    spec: PodSpec
    status: PodStatus


class ListMeta(TypedDict, total=False):
    resourceVersion: str


class DeploymentList(TypedDict, total=False):
    metadata: ListMeta
    items: list[LeanDeployment]


class PodList(TypedDict, total=False):
    metadata: ListMeta
    items: list[LeanPod]


_DECODERS = {
    DeploymentList: msgspec.json.Decoder(DeploymentList),
    PodList: msgspec.json.Decoder(PodList),
}


def decode_list(data: bytes, shape: type) -> dict[str, Any]:
    """One list body decoded to `shape` (DeploymentList or PodList); unknown keys are skipped."""
    if not data:
        return {}
    return _DECODERS[shape].decode(data)


def list_lean(call: Any, shape: type, *, kind: str, **kwargs: Any) -> dict[str, Any]:
    """A typed client list call whose body is decoded lean (see the module docstring)."""
    try:
        response = call(
            _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
        )
        try:
            data = response.data
        finally:
            response.release_conn()
        return decode_list(data, shape)
    except Exception as exc:
        raise classify(exc, kind=kind, action="list") from exc


def fingerprints(*object_lists: list[dict[str, Any]], label: str) -> dict[int, tuple]:
    """Per deployment id (from `label`): name, uid and resourceVersion of each listed object.

    Kubernetes changes an object's resourceVersion on every write, status included, so an
    unchanged fingerprint means nothing that deployment's status is read from has changed.
    """
    found: dict[int, list[tuple[str, str, str]]] = {}
    for objects in object_lists:
        for obj in objects:
            meta = obj.get("metadata") or {}
            value = (meta.get("labels") or {}).get(label)
            if value is None or not value.isdigit():
                continue
            found.setdefault(int(value), []).append(
                (meta.get("name", ""), meta.get("uid", ""), meta.get("resourceVersion", ""))
            )
    return {pk: tuple(sorted(entries)) for pk, entries in found.items()}
