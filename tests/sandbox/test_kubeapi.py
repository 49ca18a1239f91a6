"""The sandbox API server speaks the real Kubernetes API to the official `kubernetes` client."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from sandbox.kubeapi import KubeEmulator
from tests.sandbox.conftest import APPLY, api_client, apply, deployment


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


@pytest.fixture
def core(kube: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube)


@pytest.fixture
def apps(kube: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(kube)


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:
    core.create_namespace({"metadata": {"name": "team-a"}})
    return "team-a"


# -- discovery ---------------------------------------------------------------------------


def test_discovery_describes_a_v1_30_server(kube: client.ApiClient) -> None:
    assert client.VersionApi(kube).get_code().git_version.startswith("v1.30.")
    assert client.CoreApi(kube).get_api_versions().versions == ["v1"]
    groups = {g.name for g in client.ApisApi(kube).get_api_versions().groups}
    assert {"apps", "apiextensions.k8s.io"} <= groups
    assert "apps.nvidia.com" not in groups  # no CRDs unless the cluster is given them
    names = {r.name for r in client.AppsV1Api(kube).get_api_resources().resources}
    assert {"deployments", "deployments/status", "deployments/scale", "replicasets"} <= names
    core_names = {r.name for r in client.CoreV1Api(kube).get_api_resources().resources}
    assert {
        "pods",
        "pods/log",
        "services",
        "secrets",
        "events",
        "nodes",
        "namespaces",
    } <= core_names


def test_crds_appear_only_when_the_cluster_has_them() -> None:
    with KubeEmulator(crds=["nimservices", "inferenceservices"]) as emu:
        api = api_client(emu.url)
        groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
        assert {"apps.nvidia.com", "serving.kserve.io"} <= groups
        crds = client.ApiextensionsV1Api(api).list_custom_resource_definition().items
        assert {c.metadata.name for c in crds} == {
            "nimservices.apps.nvidia.com",
            "inferenceservices.serving.kserve.io",
        }
        custom = client.CustomObjectsApi(api)
        body = {
            "apiVersion": "apps.nvidia.com/v1alpha1",
            "kind": "NIMService",
            "metadata": {"name": "llama3"},
            "spec": {
                "image": {"repository": "nvcr.io/nim/meta/llama3-8b-instruct", "tag": "1.0.3"}
            },
        }
        # An apply that creates answers 201, which this client method maps to None (as it
        # would against a real server): read the object back.
        custom.patch_namespaced_custom_object(
            "apps.nvidia.com", "v1alpha1", "default", "nimservices", "llama3", body,
            field_manager="modeldeck", _content_type=APPLY,
        )  # fmt: skip
        created = custom.get_namespaced_custom_object(
            "apps.nvidia.com", "v1alpha1", "default", "nimservices", "llama3"
        )
        assert created["metadata"]["generation"] == 1 and "status" not in created
        with pytest.raises(ApiException) as err:  # CRDs take no strategic merge patch
            custom.patch_namespaced_custom_object(
                "apps.nvidia.com", "v1alpha1", "default", "nimservices", "llama3",
                {"spec": {"replicas": 2}}, _content_type="application/strategic-merge-patch+json",
            )  # fmt: skip
        assert err.value.status == 415
        api.close()


def test_health_endpoints_answer_ok(emulator: KubeEmulator) -> None:
    with httpx.Client(base_url=emulator.url) as http:
        for path in ("/healthz", "/readyz", "/livez"):
            response = http.get(path)
            assert (response.status_code, response.text) == (200, "ok")


# -- server-side apply and metadata ------------------------------------------------------


def test_apply_creates_a_missing_deployment_with_server_metadata(
    apps: client.AppsV1Api, ns: str
) -> None:
    created = apply(apps, ns, deployment("llama"))
    meta = created.metadata
    assert meta.uid and meta.resource_version.isdigit() and meta.generation == 1
    assert meta.namespace == ns and meta.creation_timestamp is not None
    assert [(m.manager, m.operation) for m in meta.managed_fields] == [("modeldeck", "Apply")]
    # Defaults a real server fills:
    assert created.spec.strategy.type == "RollingUpdate"
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    assert created.spec.template.spec.containers[0].resources.limits == {"nvidia.com/gpu": "1"}


def test_identical_reapply_changes_nothing(apps: client.AppsV1Api, ns: str) -> None:
    first = apply(apps, ns, deployment("llama"))
    again = apply(apps, ns, deployment("llama"))
    assert again.metadata.resource_version == first.metadata.resource_version
    assert again.metadata.generation == 1


def test_spec_change_bumps_generation_and_status_writes_do_not(
    apps: client.AppsV1Api, ns: str
) -> None:
    apply(apps, ns, deployment("llama"))
    changed = apply(apps, ns, deployment("llama", replicas=3))
    assert changed.metadata.generation == 2 and changed.spec.replicas == 3

    status = apps.patch_namespaced_deployment_status(
        "llama", ns, {"status": {"replicas": 3, "readyReplicas": 1}}
    )
    assert status.metadata.generation == 2
    assert int(status.metadata.resource_version) > int(changed.metadata.resource_version)
    assert status.spec.replicas == 3  # status writes leave spec alone

    # ... and spec writes leave status alone.
    after = apply(apps, ns, {**deployment("llama", replicas=2), "status": {"replicas": 99}})
    assert after.status.ready_replicas == 1 and after.status.replicas == 3
    assert after.metadata.generation == 3


def test_labels_and_annotations_change_no_generation(apps: client.AppsV1Api, ns: str) -> None:
    apply(apps, ns, deployment("llama"))
    relabelled = apply(apps, ns, deployment("llama", labels={"modeldeck.io/revision": "2"}))
    assert relabelled.metadata.generation == 1
    assert relabelled.metadata.labels["modeldeck.io/revision"] == "2"


def test_apply_without_field_manager_is_invalid(apps: client.AppsV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment("llama", ns, deployment("llama"), _content_type=APPLY)
    assert err.value.status == 422
    body = status_of(err.value)
    assert body["reason"] == "Invalid"
    assert "fieldManager: Required value" in body["message"]


def test_apply_drops_fields_the_manager_no_longer_sets(apps: client.AppsV1Api, ns: str) -> None:
    apply(apps, ns, deployment("llama", labels={"tier": "gold"}))
    apps.patch_namespaced_deployment(
        "llama", ns, {"metadata": {"labels": {"team": "nlp"}}},
        field_manager="kubectl-label", _content_type="application/merge-patch+json",
    )  # fmt: skip
    after = apply(apps, ns, deployment("llama"))
    assert "tier" not in after.metadata.labels  # ours, no longer applied: removed
    assert after.metadata.labels["team"] == "nlp"  # another manager's: kept


def test_apply_conflicting_with_another_manager_needs_force(
    apps: client.AppsV1Api, ns: str
) -> None:
    apply(apps, ns, deployment("llama", replicas=1))
    apps.patch_namespaced_deployment(
        "llama", ns, {"spec": {"replicas": 5}}, field_manager="kubectl-edit",
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    with pytest.raises(ApiException) as err:
        apply(apps, ns, deployment("llama", replicas=2))
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "Conflict" and '"kubectl-edit"' in body["message"]
    assert ".spec.replicas" in body["message"]
    forced = apply(apps, ns, deployment("llama", replicas=2), force=True)
    assert forced.spec.replicas == 2


def test_apply_accepts_a_yaml_body(emulator: KubeEmulator, ns: str) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: engine-args\ndata:\n  max-model-len: '8192'\n"
    response = httpx.patch(
        f"{emulator.url}/api/v1/namespaces/{ns}/configmaps/engine-args?fieldManager=modeldeck",
        content=manifest,
        headers={"Content-Type": APPLY},
    )
    assert response.status_code == 201
    assert emulator.get_object("ConfigMap", ns, "engine-args")["data"] == {"max-model-len": "8192"}


# -- reads -------------------------------------------------------------------------------


def test_label_selectors_filter_lists(
    apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    core.create_namespace({"metadata": {"name": "team-b"}})
    apply(apps, ns, deployment("a", labels={"modeldeck.io/deployment": "1", "env": "prod"}))
    apply(apps, ns, deployment("b", labels={"modeldeck.io/deployment": "2", "env": "dev"}))
    apply(apps, "team-b", deployment("c", labels={"modeldeck.io/deployment": "3"}))
    apply(apps, "team-b", {**deployment("d"), "metadata": {"name": "d"}})  # not ours

    def names(**kwargs: str) -> list[str]:
        return [d.metadata.name for d in apps.list_deployment_for_all_namespaces(**kwargs).items]

    ours = "app.kubernetes.io/managed-by=modeldeck"
    assert names(label_selector=ours) == ["a", "b", "c"]
    assert names(label_selector="app.kubernetes.io/managed-by==modeldeck,env=prod") == ["a"]
    assert names(label_selector="env!=prod") == ["b", "c", "d"]
    assert names(label_selector="env in (prod, dev)") == ["a", "b"]
    assert names(label_selector="modeldeck.io/deployment notin (1,3)") == ["b", "d"]
    assert names(label_selector="env") == ["a", "b"]
    assert names(label_selector="!env") == ["c", "d"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.namespace!=team-a") == ["c", "d"]
    assert [
        d.metadata.name
        for d in apps.list_namespaced_deployment("team-b", label_selector=ours).items
    ] == ["c"]
    with pytest.raises(ApiException) as err:
        names(label_selector="bad key=1")
    assert err.value.status == 400
    with pytest.raises(ApiException) as err:
        names(field_selector="spec.replicas=1")
    assert (
        err.value.status == 400 and "field label not supported" in status_of(err.value)["message"]
    )


def test_list_pages_with_limit_and_continue(core: client.CoreV1Api, ns: str) -> None:
    for i in range(5):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i}"}})
    first = core.list_namespaced_config_map(ns, limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map(ns, limit=10, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == ["cm-2", "cm-3", "cm-4"]
    assert not rest.metadata._continue


def test_listing_a_thousand_deployments_takes_milliseconds(emulator: KubeEmulator, ns: str) -> None:
    for i in range(1000):
        body = deployment(f"model-{i:04d}", labels={"modeldeck.io/deployment": str(i)})
        emulator.put_object({**body, "metadata": {**body["metadata"], "namespace": ns}})
    with httpx.Client() as http:
        started = time.perf_counter()
        response = http.get(
            f"{emulator.url}/apis/apps/v1/deployments",
            params={"labelSelector": "app.kubernetes.io/managed-by=modeldeck"},
        )
        elapsed = time.perf_counter() - started
    assert response.status_code == 200 and len(response.json()["items"]) == 1000
    assert elapsed < 0.5


# -- errors ------------------------------------------------------------------------------


def test_errors_are_status_objects_with_the_real_reasons(apps: client.AppsV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("missing", ns)
    assert err.value.status == 404
    assert status_of(err.value) | {"details": None} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "missing" not found', "reason": "NotFound", "code": 404,
        "details": None,
    }  # fmt: skip

    apps.create_namespaced_deployment(ns, deployment("llama"))
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(ns, deployment("llama"))
    assert (err.value.status, status_of(err.value)["reason"]) == (409, "AlreadyExists")

    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment("nowhere", deployment("llama"))
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "nowhere" not found'


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["metadata"].update(name="Llama_3"), "metadata.name"),
        (lambda d: d["spec"]["selector"].update(matchLabels={"app": "other"}), "spec.template.metadata.labels"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("image"),
         "spec.template.spec.containers[0].image"),
        (lambda d: d["spec"]["template"]["spec"].update(containers=[]), "spec.template.spec.containers"),
        (lambda d: d["metadata"].update(labels={"model": "meta-llama/Llama-3"}), "metadata.labels"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"].update(
            requests={"nvidia.com/gpu": "2"}), "spec.template.spec.containers[0].resources.requests"),
    ],
)  # fmt: skip
def test_invalid_deployments_are_rejected_with_422(
    apps: client.AppsV1Api, ns: str, mutate, field: str
) -> None:
    body = deployment("llama")
    mutate(body)
    with pytest.raises(ApiException) as err:
        apply(apps, ns, {**body, "metadata": {**body["metadata"]}})
    assert err.value.status == 422
    status = status_of(err.value)
    assert status["reason"] == "Invalid"
    assert field in [cause["field"] for cause in status["details"]["causes"]]
    assert apps.list_namespaced_deployment(ns).items == []


def test_invalid_service_is_rejected(core: client.CoreV1Api, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service(
            ns, {"metadata": {"name": "8b-model"}, "spec": {"ports": [{"port": 70000}]}}
        )
    assert err.value.status == 422
    fields = {c["field"] for c in status_of(err.value)["details"]["causes"]}
    # DNS-1035 names start with a letter; targetPort defaults to the (invalid) port.
    assert fields == {"metadata.name", "spec.ports[0].port", "spec.ports[0].targetPort"}
    svc = core.create_namespaced_service(
        ns,
        {
            "metadata": {"name": "llama"},
            "spec": {"selector": {"app": "llama"}, "ports": [{"port": 80, "targetPort": 8000}]},
        },
    )
    assert svc.spec.cluster_ip.startswith("10.96.") and svc.spec.type == "ClusterIP"


def test_replace_with_a_stale_resource_version_conflicts(apps: client.AppsV1Api, ns: str) -> None:
    created = apps.create_namespaced_deployment(ns, deployment("llama"))
    apps.patch_namespaced_deployment("llama", ns, {"spec": {"replicas": 2}})
    stale = kube_json(apps, created)
    stale["spec"]["replicas"] = 4
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("llama", ns, stale)
    assert (err.value.status, status_of(err.value)["reason"]) == (409, "Conflict")
    fresh = kube_json(apps, apps.read_namespaced_deployment("llama", ns))
    fresh["spec"]["replicas"] = 4
    assert apps.replace_namespaced_deployment("llama", ns, fresh).spec.replicas == 4


def kube_json(apps: client.AppsV1Api, obj: object) -> dict:
    return apps.api_client.sanitize_for_serialization(obj)


def test_merge_strategic_and_json_patches(apps: client.AppsV1Api, ns: str) -> None:
    body = deployment("llama", env={"A": "1"})
    body["spec"]["template"]["spec"]["containers"].append(
        {"name": "sidecar", "image": "busybox:1.36"}
    )
    apps.create_namespaced_deployment(ns, body)
    patched = apps.patch_namespaced_deployment(  # strategic merge: containers merge by name
        "llama", ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:v0.6.4"}]}}}},
    )  # fmt: skip
    containers = {c.name: c.image for c in patched.spec.template.spec.containers}
    assert containers == {"engine": "vllm/vllm-openai:v0.6.4", "sidecar": "busybox:1.36"}
    assert patched.metadata.generation == 2
    merged = apps.patch_namespaced_deployment(
        "llama", ns, {"metadata": {"annotations": {"note": "x"}}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    assert merged.metadata.annotations == {"note": "x"} and merged.metadata.generation == 2
    scaled = apps.patch_namespaced_deployment(
        "llama", ns, [{"op": "replace", "path": "/spec/replicas", "value": 3}]
    )
    assert scaled.spec.replicas == 3


def test_scale_subresource_sets_replicas(apps: client.AppsV1Api, ns: str) -> None:
    apply(apps, ns, deployment("llama"))
    scale = apps.patch_namespaced_deployment_scale("llama", ns, {"spec": {"replicas": 0}})
    assert scale.spec.replicas == 0 and scale.status.selector == "app=llama"
    assert apps.read_namespaced_deployment("llama", ns).spec.replicas == 0


def test_secret_string_data_is_stored_as_base64(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespaced_secret(
        ns, {"metadata": {"name": "hf-token"}, "stringData": {"HF_TOKEN": "hf_abc"}}
    )
    secret = core.read_namespaced_secret("hf-token", ns)
    assert secret.data == {"HF_TOKEN": "aGZfYWJj"} and secret.type == "Opaque"


def test_dry_run_create_stores_nothing(apps: client.AppsV1Api, ns: str) -> None:
    apps.create_namespaced_deployment(ns, deployment("llama"), dry_run="All")
    assert apps.list_namespaced_deployment(ns).items == []


# -- delete ------------------------------------------------------------------------------


def test_deleting_a_deployment_deletes_what_it_owns(
    emulator: KubeEmulator, apps: client.AppsV1Api, core: client.CoreV1Api, ns: str
) -> None:
    owner = apply(apps, ns, deployment("llama"))
    ref = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llama",
        "uid": owner.metadata.uid,
        "controller": True,
    }
    emulator.put_object({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                         "metadata": {"name": "llama-abc", "namespace": ns, "ownerReferences": [ref]}})  # fmt: skip
    rs = emulator.get_object("ReplicaSet", ns, "llama-abc")
    rs_ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "llama-abc",
        "uid": rs["metadata"]["uid"],
        "controller": True,
    }
    emulator.put_object({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "llama-abc-x", "namespace": ns, "ownerReferences": [rs_ref]}})  # fmt: skip
    result = apps.delete_namespaced_deployment("llama", ns)
    assert result is not None
    assert emulator.get_object("ReplicaSet", ns, "llama-abc") is None
    assert emulator.get_object("Pod", ns, "llama-abc-x") is None
    with pytest.raises(ApiException) as err:
        apps.delete_namespaced_deployment("llama", ns)
    assert err.value.status == 404


def test_deleting_a_namespace_deletes_its_objects(emulator: KubeEmulator, apps: client.AppsV1Api,
                                                  core: client.CoreV1Api, ns: str) -> None:  # fmt: skip
    apply(apps, ns, deployment("llama"))
    core.delete_namespace(ns)
    assert emulator.get_object("Deployment", ns, "llama") is None
    assert ns not in {n.metadata.name for n in core.list_namespace().items}


# -- hooks: counters, faults, outages, watches -------------------------------------------


def test_counters_count_requests_by_verb_and_resource(
    emulator: KubeEmulator, apps: client.AppsV1Api, ns: str
) -> None:
    emulator.reset_counts()
    apps.list_deployment_for_all_namespaces()
    apps.list_namespaced_deployment(ns)
    apply(apps, ns, deployment("llama"))
    assert emulator.count(verb="list", resource="deployments") == 2
    assert emulator.count(verb="list", resource="deployments", namespace=ns) == 1
    assert emulator.count(verb="patch") == 1
    with httpx.Client(base_url=emulator.url) as http:
        stats = http.get("/_emulator/stats").json()
        assert stats["total"] == 3 and stats["objects"]["deployments"] == 1
        http.post("/_emulator/reset")
    assert emulator.count() == 0


def test_fail_next_answers_injected_errors(
    emulator: KubeEmulator, apps: client.AppsV1Api, ns: str
) -> None:
    emulator.fail_next(1, status=500, verb="list")
    assert apps.read_namespaced_deployment_status  # other verbs are unaffected
    with pytest.raises(ApiException) as err:
        apps.list_namespaced_deployment(ns)
    assert (err.value.status, status_of(err.value)["reason"]) == (500, "InternalError")
    assert apps.list_namespaced_deployment(ns).items == []
    emulator.fail_next(1, status=503)
    with pytest.raises(ApiException) as err:
        apps.list_namespaced_deployment(ns)
    assert err.value.status == 503


def test_an_outage_is_a_connection_error_and_recovery_works(emulator: KubeEmulator) -> None:
    api = api_client(emulator.url, retries=1)
    core = client.CoreV1Api(api)
    assert core.list_namespace().items
    emulator.set_down(True)
    with pytest.raises((urllib3.exceptions.MaxRetryError, urllib3.exceptions.ProtocolError)):
        core.list_namespace()
    emulator.set_down(False)
    assert {n.metadata.name for n in core.list_namespace().items} >= {"default", "kube-system"}
    api.close()


def test_watch_streams_changes(core: client.CoreV1Api, ns: str) -> None:
    seen: list[tuple[str, str]] = []
    # Watch from the list's resourceVersion, as clients do: a watch that connected after the
    # writes (a fixed 0.1 s head start, on a busy machine) saw one ADDED of the patched object.
    since = core.list_namespaced_config_map(ns).metadata.resource_version

    def consume() -> None:
        for event in watch.Watch().stream(
            core.list_namespaced_config_map, ns, resource_version=since, timeout_seconds=10
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 2:
                break

    reader = threading.Thread(target=consume)
    reader.start()
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "v"}})
    reader.join(timeout=15)
    assert seen == [("ADDED", "a"), ("MODIFIED", "a")]


def test_bearer_token_is_required_when_configured() -> None:
    with KubeEmulator(token="s3cret") as emu:
        anonymous = client.CoreV1Api(api_client(emu.url))
        with pytest.raises(ApiException) as err:
            anonymous.list_namespace()
        assert err.value.status == 401
        authed = client.CoreV1Api(
            api_client(
                emu.url, api_key={"BearerToken": "s3cret"}, api_key_prefix={"BearerToken": "Bearer"}
            )
        )
        assert authed.list_namespace().items
