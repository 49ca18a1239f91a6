"""The renderers' contract with Kubernetes and with the driver, for every engine."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deployments.renderers import (
    GPU_RESOURCE,
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT_ID,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PROJECT,
    LABEL_REVISION,
    LABEL_VERSION,
    MANAGED_SELECTOR,
    ModelCache,
    RenderSpec,
    SpecError,
    deployment_selector,
    object_names,
    render,
    render_all,
    render_service,
    render_yaml,
    service_host,
)

from .specs import all_specs, big_spec, cpu_spec, make_spec

# The schemas the tests hold the output to. kubernetes-validate ships 1.25 upwards; 1.30 is the
# oldest Kubernetes ModelDeck supports, so anything newer than 1.30 in the output fails here.
K8S_VERSION = "1.30"
SPECS = all_specs()
SPEC_IDS = [name for name, _ in SPECS]
ENGINES = ("vllm", "nim", "tgi", "tei")


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def container_of(spec: RenderSpec) -> dict[str, Any]:
    return pod_spec_of(spec)["containers"][0]


def pod_spec_of(spec: RenderSpec) -> dict[str, Any]:
    return by_kind(render(spec))["Deployment"]["spec"]["template"]["spec"]


# --- Schemas ----------------------------------------------------------------------------------


def test_schema_version_is_shipped() -> None:
    assert K8S_VERSION in {v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()}


@pytest.mark.parametrize("spec", [s for _, s in SPECS], ids=SPEC_IDS)
def test_every_object_is_valid_kubernetes_in_strict_mode(spec: RenderSpec) -> None:
    objects = render_all(spec)
    assert [o["kind"] for o in objects][-2:] == ["Deployment", "Service"]
    for obj in objects:
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION


@pytest.mark.parametrize("spec", [s for _, s in SPECS], ids=SPEC_IDS)
def test_every_object_is_still_valid_on_the_newest_shipped_schemas(spec: RenderSpec) -> None:
    newest = kubernetes_validate.utils.latest_version()
    for obj in render_all(spec):
        kubernetes_validate.validate(obj, newest, strict=True)


def test_strict_validation_catches_an_unknown_field() -> None:
    # The schema test above is only worth something if strict mode rejects what it should.
    deployment = by_kind(render(make_spec()))["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# --- Labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [s for _, s in SPECS], ids=SPEC_IDS)
def test_every_object_carries_modeldecks_labels(spec: RenderSpec) -> None:
    objects = render_all(spec)
    label_sets = [(o["kind"], o["metadata"]["labels"]) for o in objects]
    label_sets.append(("Pod", by_kind(objects)["Deployment"]["spec"]["template"]["metadata"]["labels"]))
    for kind, labels in label_sets:
        assert labels[LABEL_MANAGED_BY] == "modeldeck"
        assert labels[LABEL_NAME] == spec.engine
        assert labels[LABEL_INSTANCE] == spec.deployment_name
        # The pre-download Job's pods are told apart from the engine's by their component.
        assert labels[LABEL_COMPONENT] == ("model-download" if kind == "Job" else "inference")
        assert labels[LABEL_DEPLOYMENT_ID] == str(spec.deployment_id)
        assert labels[LABEL_PROJECT] == "research"
    for obj in objects:
        assert obj["metadata"]["namespace"] == spec.namespace
        if obj["kind"] not in ("PersistentVolumeClaim", "Job"):  # both serve every revision
            assert obj["metadata"]["labels"][LABEL_REVISION] == str(spec.revision)
            assert obj["metadata"]["labels"][LABEL_VERSION] == str(spec.revision)


def test_managed_selector_matches_every_object() -> None:
    key, value = MANAGED_SELECTOR.split("=")
    for obj in render_all(big_spec("vllm")):
        assert obj["metadata"]["labels"][key] == value


def test_the_shared_cache_claim_carries_no_revision() -> None:
    # A sweep deleting an old revision's objects by label must not catch the shared cache.
    pvc = by_kind(render(big_spec("vllm")))["PersistentVolumeClaim"]
    assert LABEL_REVISION not in pvc["metadata"]["labels"]
    assert LABEL_VERSION not in pvc["metadata"]["labels"]


def test_user_labels_and_annotations_are_merged_everywhere() -> None:
    spec = big_spec("tgi")
    objects = render_all(spec)
    deployment = by_kind(objects)["Deployment"]
    for metadata in [o["metadata"] for o in objects] + [deployment["spec"]["template"]["metadata"]]:
        assert metadata["labels"]["team"] == "research"
        assert metadata["labels"]["cost-center"] == "ml-42"
        assert metadata["annotations"]["prometheus.io/scrape"] == "true"


@pytest.mark.parametrize(
    "labels,annotations",
    [
        ({LABEL_MANAGED_BY: "helm"}, {}),
        ({LABEL_DEPLOYMENT_ID: "1"}, {}),
        ({LABEL_REVISION: "1"}, {}),
        ({LABEL_INSTANCE: "other"}, {}),
        ({}, {"modeldeck.io/engine": "tgi"}),
    ],
)
def test_users_cannot_override_modeldecks_own_labels_or_annotations(
    labels: dict[str, str], annotations: dict[str, str]
) -> None:
    # Refused with a message: they used to be dropped in silence.
    with pytest.raises(SpecError) as err:
        render_all(make_spec(labels=labels, annotations=annotations))
    assert err.value.field == ("labels" if labels else "annotations")
    assert "is set by ModelDeck" in err.value.message


def test_a_modeldeck_io_key_modeldeck_does_not_set_passes() -> None:
    spec = make_spec(labels={"modeldeck.io/inference-engine": "vllm"})
    for obj in render_all(spec):
        assert obj["metadata"]["labels"]["modeldeck.io/inference-engine"] == "vllm"


# --- Blue-green -------------------------------------------------------------------------------


def test_each_revision_gets_its_own_deployment_and_the_service_follows_the_revision() -> None:
    old, new = make_spec(revision=3), make_spec(revision=4)
    old_dep, new_dep = by_kind(render(old))["Deployment"], by_kind(render(new))["Deployment"]
    assert (old_dep["metadata"]["name"], new_dep["metadata"]["name"]) == ("chat-r3", "chat-r4")
    old_svc, new_svc = render_service(old), render_service(new)
    assert old_svc["metadata"]["name"] == new_svc["metadata"]["name"] == "chat"
    assert new_svc["spec"]["selector"] == {LABEL_DEPLOYMENT_ID: "42", LABEL_REVISION: "4"}
    # The new Service selects the new revision's pods and none of the old one's.
    new_pods = new_dep["spec"]["template"]["metadata"]["labels"]
    old_pods = old_dep["spec"]["template"]["metadata"]["labels"]
    assert new_svc["spec"]["selector"].items() <= new_pods.items()
    assert not new_svc["spec"]["selector"].items() <= old_pods.items()
    # Two revisions' Deployments never fight over each other's pods.
    assert not old_dep["spec"]["selector"]["matchLabels"].items() <= new_pods.items()


@pytest.mark.parametrize("spec", [s for _, s in SPECS], ids=SPEC_IDS)
def test_deployment_selects_its_own_pods_and_the_service_targets_the_named_port(
    spec: RenderSpec,
) -> None:
    objects = by_kind(render_all(spec))
    deployment, service = objects["Deployment"], objects["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"] == "http"
    assert service["spec"]["ports"][0]["port"] == 80


def test_the_model_cache_is_named_per_deployment_and_shared_by_revisions() -> None:
    r3 = big_spec("vllm", revision=3)
    r4 = big_spec("vllm", revision=4)
    pvc3, pvc4 = (
        by_kind(render(r3))["PersistentVolumeClaim"],
        by_kind(render(r4))["PersistentVolumeClaim"],
    )
    assert pvc3 == pvc4
    assert pvc3["metadata"]["name"] == "big-model-cache"
    assert pvc3["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "500Gi"}},
        "storageClassName": "fast-rwx",
    }
    volumes = by_kind(render(r4))["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "big-model-cache"},
    } in volumes
    assert render(r3)[0]["kind"] == "PersistentVolumeClaim"  # applied before the pods need it


def test_without_a_model_cache_there_is_no_claim_and_the_cache_is_an_empty_dir() -> None:
    objects = render(make_spec())
    assert [o["kind"] for o in objects] == ["Deployment"]
    volumes = objects[0]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-cache", "emptyDir": {"sizeLimit": "50Gi"}} in volumes


def test_object_names_and_selectors_for_the_driver() -> None:
    names = object_names(big_spec("vllm", revision=7))
    assert names.deployment == "big-r7"
    assert names.service == "big"
    assert names.model_cache == "big-model-cache"
    assert names.namespace == "team-a"
    assert object_names(make_spec()).model_cache is None
    assert (
        deployment_selector(42)
        == "app.kubernetes.io/managed-by=modeldeck,modeldeck.io/deployment-id=42"
    )
    assert deployment_selector(42, 3).endswith(",modeldeck.io/revision=3")
    assert service_host(make_spec()) == "chat.team-a.svc"


def test_rollout_never_takes_a_replica_away_before_its_replacement_is_ready() -> None:
    strategy = by_kind(render(make_spec()))["Deployment"]["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_zero_replicas_renders_a_scaled_down_deployment() -> None:
    assert by_kind(render(make_spec(replicas=0)))["Deployment"]["spec"]["replicas"] == 0


# --- Pods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_gpus_are_requested_and_limited_equally(engine: str) -> None:
    resources = container_of(big_spec(engine))["resources"]
    gpus = "1" if engine == "tei" else "4"
    assert resources["requests"][GPU_RESOURCE] == resources["limits"][GPU_RESOURCE] == gpus
    assert resources["requests"]["cpu"] == "16"
    # 128Gi for the engine plus /dev/shm (16Gi with tensor parallelism, 2Gi on one GPU): the
    # tmpfs is charged to the container's memory limit.
    memory = "130Gi" if engine == "tei" else "144Gi"
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == memory
    assert "cpu" not in resources["limits"]


@pytest.mark.parametrize("engine", ["vllm", "tgi", "tei"])
def test_a_cpu_deployment_asks_for_no_gpu_and_tolerates_no_gpu_taint(engine: str) -> None:
    pod = pod_spec_of(cpu_spec(engine))
    resources = pod["containers"][0]["resources"]
    assert GPU_RESOURCE not in resources["requests"]
    assert GPU_RESOURCE not in resources["limits"]
    assert "tolerations" not in pod
    assert "nodeSelector" not in pod


def test_gpu_pods_tolerate_the_gpu_taint_once() -> None:
    tolerations = pod_spec_of(make_spec())["tolerations"]
    assert tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    given = {
        "key": "nvidia.com/gpu",
        "operator": "Equal",
        "value": "present",
        "effect": "NoSchedule",
    }
    assert pod_spec_of(make_spec(tolerations=[given]))["tolerations"] == [given]


def test_tolerations_node_selector_gpu_type_and_affinity_are_passed_through() -> None:
    spec = big_spec("vllm")
    pod = pod_spec_of(spec)
    assert pod["tolerations"][:2] == [dict(t) for t in spec.tolerations]
    assert pod["tolerations"][2]["key"] == "nvidia.com/gpu"
    assert pod["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "p5.48xlarge",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert pod["affinity"] == spec.affinity
    assert pod["imagePullSecrets"] == [{"name": "registry-cred"}]


@pytest.mark.parametrize("engine", ENGINES)
def test_pods_are_locked_down(engine: str) -> None:
    pod = pod_spec_of(make_spec(engine))
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["privileged"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] >= 60


@pytest.mark.parametrize(
    ("gpus", "size"),
    [(0, "1Gi"), (1, "2Gi"), (4, "16Gi")],
    ids=["cpu", "one-gpu", "tensor-parallel"],
)
def test_dev_shm_is_a_memory_backed_volume_sized_for_the_gpus(gpus: int, size: str) -> None:
    spec = make_spec("tgi", gpus=gpus) if gpus else cpu_spec("tgi")
    pod = pod_spec_of(spec)
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    custom = pod_spec_of(make_spec("tgi", shm_size="8Gi"))
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in custom[
        "volumes"
    ]


# --- Probes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("budget", [1800, 95, 7200])
def test_startup_probe_waits_the_whole_startup_budget(engine: str, budget: int) -> None:
    deployment = by_kind(render(make_spec(engine, startup_budget_seconds=budget)))["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= budget
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    # The Deployment must not report a stalled rollout while the model is still loading.
    assert deployment["spec"]["progressDeadlineSeconds"] > budget


def test_default_startup_budget_is_generous() -> None:
    startup = container_of(make_spec())["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 1800


# --- Secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_tokens_are_referenced_from_secrets_never_inlined(engine: str) -> None:
    spec = big_spec(engine)
    env = {e["name"]: e for e in container_of(spec)["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    }
    for entry in env.values():
        if entry["name"] in ("HF_TOKEN", "NGC_API_KEY", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN"):
            assert "value" not in entry
            assert "secretKeyRef" in entry["valueFrom"]
    assert "Secret" not in {o["kind"] for o in render_all(spec)}


@pytest.mark.parametrize("name", ["HF_TOKEN", "NGC_API_KEY", "HUGGING_FACE_HUB_TOKEN"])
def test_a_credential_in_plain_env_is_refused(name: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        render(make_spec(env={name: "hf_abcdefgh"}))
    assert excinfo.value.field == "env"


def test_user_env_is_set_and_sorted() -> None:
    env = container_of(big_spec("vllm"))["env"]
    names = [e["name"] for e in env if "value" in e]
    assert {"name": "LOG_LEVEL", "value": "debug"} in env
    assert {"name": "OMP_NUM_THREADS", "value": "8"} in env
    assert names[0] == "HF_HOME"  # ModelDeck's own first, then the rest in name order
    assert names[1:] == sorted(names[1:])


def test_user_env_overrides_modeldecks_defaults_but_not_its_contract() -> None:
    env = {
        e["name"]: e.get("value")
        for e in container_of(make_spec(env={"VLLM_NO_USAGE_STATS": "0"}))["env"]
    }
    assert env["VLLM_NO_USAGE_STATS"] == "0"
    with pytest.raises(SpecError, match="HF_HOME"):
        render(make_spec(env={"HF_HOME": "/tmp"}))


# --- Purity and determinism -------------------------------------------------------------------

_IO_EVENTS = ("open", "os.", "socket.", "subprocess.", "shutil.", "urllib.", "http.", "sqlite3.")
_recording: list[list[str]] = []


def _audit(event: str, _args: tuple[Any, ...]) -> None:
    if _recording and event.startswith(_IO_EVENTS):
        _recording[-1].append(event)


sys.addaudithook(_audit)  # audit hooks can't be removed; _audit only records inside io_events()


@contextmanager
def io_events() -> Iterator[list[str]]:
    events: list[str] = []
    _recording.append(events)
    try:
        yield events
    finally:
        _recording.pop()


def test_the_io_detector_sees_io() -> None:
    with io_events() as events:
        open(__file__).close()
    assert "open" in events


@pytest.mark.parametrize("spec", [s for _, s in SPECS], ids=SPEC_IDS)
def test_rendering_does_no_io(spec: RenderSpec) -> None:
    render_yaml(spec)  # warm up: imports done lazily by PyYAML are not the renderer's I/O
    with io_events() as events:
        render_all(spec)
        render_yaml(spec)
        object_names(spec)
    assert events == []


@pytest.mark.parametrize("spec", [s for _, s in SPECS], ids=SPEC_IDS)
def test_same_spec_renders_identical_objects(spec: RenderSpec) -> None:
    assert render_all(spec) == render_all(spec)
    assert render_yaml(spec) == render_yaml(spec)


def test_output_does_not_depend_on_the_order_mappings_were_built_in() -> None:
    a = big_spec("vllm")
    b = big_spec(
        "vllm",
        env=dict(reversed(list(a.env.items()))),
        labels=dict(reversed(list(a.labels.items()))),
        annotations=dict(reversed(list(a.annotations.items()))),
        node_selector=dict(reversed(list(a.node_selector.items()))),
        engine_vars=dict(reversed(list(a.engine_vars.items()))),
    )
    assert render_yaml(a) == render_yaml(b)


def test_rendering_neither_changes_the_spec_nor_shares_state_with_the_output() -> None:
    spec = big_spec("vllm")
    before = copy.deepcopy(spec)
    objects = render_all(spec)
    assert spec == before
    # The driver may decorate what it gets; that must not leak into the spec or the next render.
    deployment = by_kind(objects)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    pod["affinity"]["nodeAffinity"].clear()
    pod["tolerations"][0]["value"] = "changed"
    deployment["metadata"]["labels"]["extra"] = "x"
    assert spec == before
    assert render_all(spec) == render_all(before)


def test_spec_copies_what_it_is_given() -> None:
    env = {"A": "1"}
    args = ["--x", "1"]
    spec = make_spec(env=env, extra_args=args)
    env["B"] = "2"
    args.append("--y")
    assert dict(spec.env) == {"A": "1"}
    assert spec.extra_args == ("--x", "1")


# --- YAML -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [s for _, s in SPECS], ids=SPEC_IDS)
def test_yaml_holds_every_object_and_reads_back_the_same(spec: RenderSpec) -> None:
    text = render_yaml(spec)
    documents = list(yaml.safe_load_all(text))
    assert documents == render_all(spec)
    assert text.startswith("---\n")


def test_yaml_keeps_string_values_strings() -> None:
    # 'off', '1', '8000' must stay strings, or Kubernetes rejects the env var or label.
    documents = list(yaml.safe_load_all(render_yaml(make_spec("tgi"))))
    env = {
        e["name"]: e.get("value")
        for e in documents[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["USAGE_STATS"] == "off"
    assert documents[0]["metadata"]["labels"][LABEL_REVISION] == "3"


def test_spec_round_trips_through_a_dict() -> None:
    data = {
        "deployment_id": 1,
        "deployment_name": "emb",
        "revision": 1,
        "namespace": "ns",
        "engine": "tei",
        "image": "ghcr.io/huggingface/text-embeddings-inference:1.5",
        "model_ref": "BAAI/bge-small-en-v1.5",
        "gpus": 0,
        "tolerations": [{"key": "a", "operator": "Exists"}],
        "secret_env": {"HF_TOKEN": ["hf", "token"]},  # JSON has no tuples
        "model_cache": {"size": "10Gi", "storage_class": None, "access_mode": "ReadWriteOnce"},
    }
    spec = RenderSpec.from_dict(data)
    assert spec.model_cache == ModelCache(size="10Gi", access_mode="ReadWriteOnce")
    assert spec.secret_env == {"HF_TOKEN": ("hf", "token")}
    assert by_kind(render(spec))["PersistentVolumeClaim"]["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]
    with pytest.raises(SpecError) as excinfo:
        RenderSpec.from_dict({**data, "pricing": {}})
    assert excinfo.value.field == "pricing"
    with pytest.raises(SpecError) as excinfo:
        RenderSpec.from_dict({k: v for k, v in data.items() if k != "image"})
    assert excinfo.value.field == "image"
