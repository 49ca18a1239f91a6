"""Server-side apply, reads and label-selected deletes of the objects ModelDeck manages."""

from __future__ import annotations

import base64
import json
from typing import Any

from deployments.kube.client import (
    APPLY_CONTENT_TYPE,
    FIELD_MANAGER,
    Kube,
    KubeError,
    PermanentKubeError,
    classify,
    raw,
)
from deployments.kube.lean import DeploymentList, PodList, list_lean
from deployments.renderers import LABEL_MANAGED_BY, MANAGED_BY, MANAGED_SELECTOR

# Kinds the driver applies, with the typed calls for each. Only these: a manifest of any
# other kind is a bug upstream, refused before anything reaches the cluster.
_APPLY = {
    "Deployment": ("apps", "patch_namespaced_deployment"),
    "Service": ("core", "patch_namespaced_service"),
    "PersistentVolumeClaim": ("core", "patch_namespaced_persistent_volume_claim"),
    "Secret": ("core", "patch_namespaced_secret"),
    "ConfigMap": ("core", "patch_namespaced_config_map"),
    "Ingress": ("networking", "patch_namespaced_ingress"),
    "NetworkPolicy": ("networking", "patch_namespaced_network_policy"),
    "Job": ("batch", "patch_namespaced_job"),  # the pre-download Job (renderers/download.py)
}
# Custom resources: (group, version, plural) for the CustomObjectsApi.
CUSTOM_KINDS = {
    "NIMService": ("apps.nvidia.com", "v1alpha1", "nimservices"),
    "NIMCache": ("apps.nvidia.com", "v1alpha1", "nimcaches"),
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices"),
    "ServingRuntime": ("serving.kserve.io", "v1alpha1", "servingruntimes"),
}


def ensure_namespace(kube: Kube, namespace: str) -> bool:
    """Create the project's namespace when missing (one GET when it exists). True if created."""
    try:
        raw(kube.core.read_namespace, namespace, kind="Namespace", action="read")
        return False
    except KubeError as err:
        if err.status != 404:
            raise
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
    }
    raw(kube.core.patch_namespace, namespace, body, field_manager=FIELD_MANAGER, force=True,
        _content_type=APPLY_CONTENT_TYPE, kind="Namespace", action="create")  # fmt: skip
    return True


def apply(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply one object as field manager `modeldeck`, forcing ownership: the
    console is the source of truth for every field it sets. Unchanged objects stay untouched
    (same resourceVersion), which is what makes a repeated push harmless."""
    kind = obj["kind"]
    meta = obj["metadata"]
    if kind in CUSTOM_KINDS:
        group_name, version, plural = CUSTOM_KINDS[kind]
        return raw(kube.custom.patch_namespaced_custom_object, group_name, version, meta["namespace"],
                   plural, meta["name"], obj, field_manager=FIELD_MANAGER, force=True,
                   _content_type=APPLY_CONTENT_TYPE, kind=kind, action="apply")  # fmt: skip
    if kind not in _APPLY:
        raise PermanentKubeError(f"ModelDeck does not apply {kind} objects.")
    group, method = _APPLY[kind]
    api = getattr(kube, group)
    return raw(getattr(api, method), meta["name"], meta["namespace"], obj, field_manager=FIELD_MANAGER,
               force=True, _content_type=APPLY_CONTENT_TYPE, kind=kind, action="apply")  # fmt: skip


def apply_secret(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    """Apply a Secret ModelDeck makes from a project's integration, but never take over one it
    did not create: a forced server-side apply would silently overwrite an operator's Secret of
    the same name. An existing Secret without ModelDeck's label is refused, permanently."""
    meta = obj["metadata"]
    try:
        existing = raw(kube.core.read_namespaced_secret, meta["name"], meta["namespace"],
                       kind="Secret", action="read")  # fmt: skip
    except PermanentKubeError as err:
        if err.status != 404:
            raise
        existing = None
    if existing is not None:
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
            raise PermanentKubeError(
                f"Secret {meta['name']} already exists in namespace {meta['namespace']} and was "
                f"not created by ModelDeck (no {LABEL_MANAGED_BY}={MANAGED_BY} label); it is left "
                "alone. Remove or rename it there, then update the deployment.",
                status=409, kind="Secret", reason="SecretNotOwned",
            )  # fmt: skip
    return apply(kube, obj)


def secret_object(
    namespace: str, name: str, data: dict[str, str], *, type_: str = "Opaque"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        },
        "type": type_,
        # base64 in `data` rather than `stringData`: stringData is write-only and would make
        # every apply look like a change.
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def docker_config_secret(
    namespace: str, name: str, registry: str, username: str, password: str
) -> dict[str, Any]:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = {"auths": {registry: {"username": username, "password": password, "auth": auth}}}
    obj = secret_object(namespace, name, {".dockerconfigjson": json.dumps(config, sort_keys=True)})
    obj["type"] = "kubernetes.io/dockerconfigjson"
    return obj


def read_deployment(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return raw(
            kube.apps.read_namespaced_deployment, name, namespace, kind="Deployment", action="read"
        )
    except PermanentKubeError as err:
        if err.status == 404:
            return None
        raise


def delete_selected(kube: Kube, namespace: str, selector: str, *, kinds: tuple[str, ...]) -> None:
    """Delete every object of `kinds` in the namespace matching the label selector."""
    calls = {
        "Deployment": kube.apps.delete_collection_namespaced_deployment,
        "Service": kube.core.delete_collection_namespaced_service,
        "PersistentVolumeClaim": kube.core.delete_collection_namespaced_persistent_volume_claim,
        "Secret": kube.core.delete_collection_namespaced_secret,
        "ConfigMap": kube.core.delete_collection_namespaced_config_map,
        "Ingress": kube.networking.delete_collection_namespaced_ingress,
        "NetworkPolicy": kube.networking.delete_collection_namespaced_network_policy,
        "Job": kube.batch.delete_collection_namespaced_job,
    }
    for kind in kinds:
        try:
            if kind in CUSTOM_KINDS:
                group, version, plural = CUSTOM_KINDS[kind]
                raw(kube.custom.delete_collection_namespaced_custom_object, group, version, namespace,
                    plural, label_selector=selector, propagation_policy="Background", kind=kind,
                    action="delete")  # fmt: skip
                continue
            raw(calls[kind], namespace, label_selector=selector, propagation_policy="Background",
                kind=kind, action="delete")  # fmt: skip
        except PermanentKubeError as err:
            if err.status != 404:  # the namespace is gone already: nothing to delete
                raise


def count_selected(kube: Kube, namespace: str, selector: str) -> int:
    """Objects (Deployments, Services, Pods, PVCs) still present for a selector."""
    total = 0
    for call in (
        kube.apps.list_namespaced_deployment,
        kube.core.list_namespaced_service,
        kube.core.list_namespaced_pod,
        kube.core.list_namespaced_persistent_volume_claim,
        kube.batch.list_namespaced_job,
    ):
        try:
            total += len(
                raw(call, namespace, label_selector=selector, kind="objects", action="list").get(
                    "items"
                )
                or []
            )
        except PermanentKubeError as err:
            if err.status != 404:
                raise
    return total


def list_pod_events(kube: Kube) -> list[dict[str, Any]]:
    """Every Pod event in the cluster in one list call (events carry no labels of ours; the
    caller keeps those of the pods it listed)."""
    events = raw(kube.core.list_event_for_all_namespaces, field_selector="involvedObject.kind=Pod",
                 kind="Events", action="list")  # fmt: skip
    return events.get("items") or []


def list_managed(kube: Kube) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Everything labelled as ours across the cluster: exactly two list calls (Deployments, Pods),
    decoded lean (kube/lean.py: only the fields the status rules read)."""
    deployments = list_lean(kube.apps.list_deployment_for_all_namespaces, DeploymentList,
                            label_selector=MANAGED_SELECTOR, kind="Deployments")  # fmt: skip
    pods = list_lean(
        kube.core.list_pod_for_all_namespaces, PodList, label_selector=MANAGED_SELECTOR, kind="Pods"
    )
    return deployments.get("items") or [], pods.get("items") or []


def read_job(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return raw(kube.batch.read_namespaced_job, name, namespace, kind="Job", action="read")
    except PermanentKubeError as err:
        if err.status == 404:
            return None
        raise


def delete_job(kube: Kube, namespace: str, name: str) -> None:
    """Remove one Job and its pods (a failed download, before it is tried again)."""
    try:
        raw(kube.batch.delete_namespaced_job, name, namespace, propagation_policy="Background",
            kind="Job", action="delete")  # fmt: skip
    except PermanentKubeError as err:
        if err.status != 404:
            raise


def list_jobs(kube: Kube) -> list[dict[str, Any]]:
    """Every pre-download Job of ours across the cluster: one list call (the status sync's)."""
    found = raw(kube.batch.list_job_for_all_namespaces, label_selector=MANAGED_SELECTOR,
                kind="Jobs", action="list")  # fmt: skip
    return found.get("items") or []


def list_custom(kube: Kube, kind: str) -> list[dict[str, Any]]:
    """Every object of a custom kind labelled as ours, across the cluster: one list call."""
    group, version, plural = CUSTOM_KINDS[kind]
    found = raw(kube.custom.list_cluster_custom_object, group, version, plural,
                label_selector=MANAGED_SELECTOR, kind=kind, action="list")  # fmt: skip
    return found.get("items") or []


# ModelDeck's own CRD, which users create and ModelDeck reads (deployments/controller.py).
MODELDEPLOYMENT_API = ("modeldeck.io", "v1", "modeldeployments")


def list_modeldeployments(kube: Kube) -> list[dict[str, Any]]:
    """Every ModelDeployment resource of the cluster, whoever made it: one list call."""
    group, version, plural = MODELDEPLOYMENT_API
    found = raw(kube.custom.list_cluster_custom_object, group, version, plural,
                kind="ModelDeployment", action="list")  # fmt: skip
    return found.get("items") or []


def write_modeldeployment_status(kube: Kube, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Replace a ModelDeployment's status through its status subresource (a merge patch: the
    spec, which the user owns, is never written)."""
    group, version, plural = MODELDEPLOYMENT_API
    raw(kube.custom.patch_namespaced_custom_object_status, group, version, namespace, plural, name,
        {"status": status}, _content_type="application/merge-patch+json",
        kind="ModelDeployment", action="status")  # fmt: skip


__all__ = [
    "KubeError",
    "apply",
    "apply_secret",
    "classify",
    "count_selected",
    "delete_selected",
    "docker_config_secret",
    "ensure_namespace",
    "list_custom",
    "list_jobs",
    "delete_job",
    "read_job",
    "list_managed",
    "list_modeldeployments",
    "write_modeldeployment_status",
    "list_pod_events",
    "read_deployment",
    "secret_object",
]
