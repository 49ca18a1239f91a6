"""Installing ModelDeck on a cluster: the kustomize overlays render with `kubectl kustomize`,
every object is valid Kubernetes (the renderers' strict schemas), the pieces refer to each other
correctly, the RBAC of an in-cluster pool covers what the driver does, and the Dockerfile's
file set is enough to run the product."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from deployments.kube import objects as kube_objects
from tests.renderers.test_renderers import K8S_VERSION
from tests.test_architecture import PRODUCT_APPS

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["production", "external-pools"]
KUBECTL = shutil.which("kubectl")
# Skipped without kubectl on a workstation; in CI (CI=true, where scripts/ensure_services.sh installs
# it) a missing kubectl fails.
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None and os.environ.get("CI") != "true",
    reason="kubectl is not installed (apt-get install kubernetes-client)",
)

# The typed kinds the driver applies → (API group, resource). A kind added to the driver's table
# without a line here fails test_in_cluster_rbac_covers_every_kind_the_driver_manages.
BUILTIN_RESOURCES = {
    "Deployment": ("apps", "deployments"),
    "Service": ("", "services"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Secret": ("", "secrets"),
    "ConfigMap": ("", "configmaps"),
    "Ingress": ("networking.k8s.io", "ingresses"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Job": ("batch", "jobs"),
}
EXTERNAL_SECRET = "modeldeck-secrets"
SECRET_KEYS = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "MODELDECK_ENCRYPTION_KEY")


def render(overlay: str) -> list[dict]:
    if KUBECTL is None:
        pytest.fail("kubectl is missing: apt-get install kubernetes-client (scripts/ensure_services.sh does)")
    out = subprocess.run([KUBECTL, "kustomize", str(KUSTOMIZE / "overlays" / overlay)], check=True,
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_specs(objs: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("Deployment", "Job")}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_object_is_valid_kubernetes(overlay):
    objs = render(overlay)
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Job", "Deployment", "Service"} <= kinds
    assert set(by_kind(objs, "Deployment")) == {"modeldeck-web", "modeldeck-worker", "modeldeck-beat"}
    for obj in objs:
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION, obj["metadata"]["name"]
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "modeldeck"


@needs_kubectl
def test_strict_validation_would_catch_a_mistake():
    web = by_kind(render("production"), "Deployment")["modeldeck-web"]
    web["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, K8S_VERSION, strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_between_objects_hold(overlay):
    objs = render(overlay)
    configmaps, secrets = by_kind(objs, "ConfigMap"), by_kind(objs, "Secret")
    accounts, claims = by_kind(objs, "ServiceAccount"), by_kind(objs, "PersistentVolumeClaim")
    images = set()
    for name, spec in pod_specs(objs).items():
        assert spec["serviceAccountName"] in accounts, name
        assert spec["securityContext"]["runAsNonRoot"] is True
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for container in spec["containers"]:
            images.add(container["image"])
            refs = container["envFrom"]
            assert [r["configMapRef"]["name"] for r in refs if "configMapRef" in r] == ["modeldeck-config"]
            assert [r["secretRef"]["name"] for r in refs if "secretRef" in r] == [EXTERNAL_SECRET]
            assert "modeldeck-config" in configmaps
            mounted = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounted <= {v["name"] for v in spec.get("volumes", [])}
    assert len(images) == 1, images  # one image, the command picks the role
    # PostgreSQL and Redis are external settings: the Secret is the operator's, never in the repository.
    assert EXTERNAL_SECRET not in secrets
    web = by_kind(objs, "Deployment")["modeldeck-web"]
    labels = web["spec"]["template"]["metadata"]["labels"]
    service = by_kind(objs, "Service")["modeldeck-web"]
    assert service["spec"]["selector"].items() <= labels.items()
    for ingress in by_kind(objs, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                assert p["backend"]["service"]["name"] in by_kind(objs, "Service")


@needs_kubectl
def test_config_names_only_settings_modeldeck_reads_and_commands_name_real_modules():
    settings_source = (ROOT / "console" / "settings.py").read_text()
    read = set(re.findall(r'env_[a-z]+\("([A-Z0-9_]+)"', settings_source))
    objs = render("production")
    unknown = set(by_kind(objs, "ConfigMap")["modeldeck-config"]["data"]) - read
    assert unknown == set(), f"ConfigMap keys console/settings.py never reads: {unknown}"
    assert set(SECRET_KEYS) <= read
    commands = {name: spec["containers"][0]["command"] for name, spec in pod_specs(objs).items()}
    assert "console.asgi:application" in commands["modeldeck-web"]
    assert commands["modeldeck-worker"][:6] == ["python", "-m", "celery", "-A", "console", "worker"]
    assert commands["modeldeck-beat"][:6] == ["python", "-m", "celery", "-A", "console", "beat"]
    assert commands["modeldeck-migrate"] == ["python", "manage.py", "migrate", "--noinput"]
    probe = by_kind(objs, "Deployment")["modeldeck-web"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    host = probe["httpGet"]["httpHeaders"][0]["value"]
    assert host in by_kind(objs, "ConfigMap")["modeldeck-config"]["data"]["ALLOWED_HOSTS"].split(",")


def _allowed(rules: list[dict], group: str, resource: str, verbs: set[str]) -> bool:
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"] and verbs <= set(rule["verbs"]):
            return True
    return False


@needs_kubectl
def test_in_cluster_rbac_covers_every_kind_the_driver_manages():
    objs = render("production")
    role = by_kind(objs, "ClusterRole")["modeldeck-pool"]
    binding = by_kind(objs, "ClusterRoleBinding")["modeldeck-pool"]
    assert binding["roleRef"]["name"] == "modeldeck-pool"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modeldeck", "namespace": "modeldeck"}]
    managed = {"get", "list", "patch", "delete"}
    missing = []
    for kind in kube_objects._APPLY:
        assert kind in BUILTIN_RESOURCES, f"add {kind} to BUILTIN_RESOURCES (and the ClusterRole)"
        group, resource = BUILTIN_RESOURCES[kind]
        if not _allowed(role["rules"], group, resource, managed):
            missing.append(kind)
    for kind, (group, _version, plural) in kube_objects.CUSTOM_KINDS.items():
        if not _allowed(role["rules"], group, plural, managed):
            missing.append(kind)
    for group, resource, verbs in [("", "namespaces", {"get", "create"}), ("", "pods", {"list"}),
                                   ("", "events", {"list"}), ("", "nodes", {"list"}), ("", "pods/log", {"get"})]:  # fmt: skip
        if not _allowed(role["rules"], group, resource, verbs):
            missing.append(resource)
    assert missing == []
    # The pools-by-kubeconfig install has no rights in its own cluster at all.
    assert not {o["kind"] for o in render("external-pools")} & {"ClusterRole", "ClusterRoleBinding", "Role"}


def test_the_dockerfile_ships_every_product_app_and_nothing_of_the_sandbox(tmp_path):
    text = (ROOT / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.M) for s in line.split()[:-1]]
    for source in sources:
        assert (ROOT / source.rstrip("/")).exists(), f"COPY {source}: no such file"
    copied = {s.rstrip("/") for s in sources}
    assert set(PRODUCT_APPS) <= copied and {"templates", "static", "manage.py", "modeldeck_cli"} <= copied
    assert "sandbox" not in copied and "tests" not in copied
    # The image's file set is enough: check, collectstatic and the ASGI app load from it alone.
    image = tmp_path / "app"
    image.mkdir()
    for source in copied:
        src = ROOT / source
        (shutil.copytree if src.is_dir() else shutil.copy)(src, image / source)
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "console.settings",
           "MODELDECK_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}  # fmt: skip
    for command in (["manage.py", "check"], ["manage.py", "collectstatic", "--noinput"],
                    ["-c", "import console.asgi, sys; assert 'sandbox' not in sys.modules"]):  # fmt: skip
        result = subprocess.run([sys.executable, *command], cwd=image, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "data" / "staticfiles" / "modeldeck" / "app.css").exists()
