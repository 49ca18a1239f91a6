"""Compute pools as untrusted input: kubeconfigs reduced, nothing run or read, no remote text shown,
and only platform operators (or organization admins where the setting allows) manage pools."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from rest_framework.test import APIClient

from deployments import kube
from deployments.kube.client import PermanentKubeError, configuration_for
from deployments.kube.kubeconfig import KubeconfigRefused, reduce_kubeconfig
from deployments.models import ComputePool, DeploymentState, PoolKind, PoolManager
from deployments.services import pool_create, pool_test_connection, pool_update
from projects.models import Role
from tests.conftest import login
from tests.factories import MembershipFactory, rest_api_client

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "file-secret-4f1c2a9e"
REMOTE_BODY = "REMOTE-BODY-7d3e91 root:x:0:0 instance-metadata"
PUBLIC_SERVER = "https://8.8.8.8:6443"  # a public literal: no DNS needed to judge it


def api(user) -> APIClient:
    return rest_api_client(user)  # a hashed REST key, as REST clients authenticate


@pytest.fixture
def trap(tmp_path: Path) -> dict:
    """A kubeconfig whose exec plugin would create a marker file and whose tokenFile points at a
    file holding a secret: the two things a loader would run and read."""
    marker = tmp_path / "marker-exec-ran"
    secret_file = tmp_path / "secret-token"
    secret_file.write_text(SECRET)

    def kubeconfig(user: dict) -> str:
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": PUBLIC_SERVER}}],
            "users": [{"name": "attacker", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "attacker"}}],
        })  # fmt: skip

    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "/bin/sh",
                          "args": ["-c", f"touch {marker}; echo '{{}}'"]}}  # fmt: skip
    return {
        "marker": marker,
        "secret_file": secret_file,
        "exec": kubeconfig(exec_user),
        "token_file": kubeconfig({"tokenFile": str(secret_file)}),
        "both": kubeconfig({**exec_user, "tokenFile": str(secret_file)}),
        "kubeconfig": kubeconfig,
    }


def test_the_trap_is_real_the_official_loader_runs_it(trap, tmp_path):
    """Control: the same kubeconfig handed to kubernetes.config does run the program, so the
    tests below would see a marker if ModelDeck ever let the loader near tenant data."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    try:
        k8s_config.load_kube_config_from_dict(yaml.safe_load(trap["exec"]), client_configuration=k8s.Configuration(),
                                              persist_config=False)  # fmt: skip
    except Exception:  # the plugin's output is no credential; what matters is that it ran
        pass
    assert trap["marker"].exists()


# --- Reduction: each dangerous field refused by name --------------------------------------------


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("user", "exec", {"command": "/bin/sh", "args": ["-c", "id"]}),
        ("user", "auth-provider", {"name": "oidc", "config": {"idp-issuer-url": "http://169.254.169.254/"}}),
        ("user", "tokenFile", "/proc/self/environ"),
        ("user", "client-certificate", "/etc/ssl/private/cert.pem"),
        ("user", "client-key", "/etc/ssl/private/key.pem"),
        ("user", "username", "admin"),
        ("user", "password", "admin"),
        ("user", "as", "system:admin"),
        ("cluster", "certificate-authority", "/etc/passwd"),
        ("cluster", "proxy-url", "http://169.254.169.254:80"),
    ],
)
def test_each_dangerous_kubeconfig_field_is_refused_by_name(section, field, value):
    cluster = {"server": PUBLIC_SERVER}
    user: dict = {"token": "abc"}
    (user if section == "user" else cluster)[field] = value
    text = yaml.safe_dump({"clusters": [{"name": "c", "cluster": cluster}], "users": [{"name": "u", "user": user}]})

    with pytest.raises(KubeconfigRefused) as exc:
        reduce_kubeconfig(text)

    assert exc.value.field == f"{section}s[{'c' if section == 'cluster' else 'u'}].{section}.{field}"
    assert field in str(exc.value)


def test_the_reduced_copy_keeps_only_server_ca_and_inline_credentials():
    ca = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
    text = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "prod", "preferences": {"colors": True},
        "clusters": [{"name": "prod", "cluster": {"server": "https://k8s.example.com:6443/",
                                                   "certificate-authority-data": ca, "extensions": []}},
                     {"name": "other", "cluster": {"server": "https://other.example.com"}}],
        "users": [{"name": "sa", "user": {"token": "tok-123"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "sa", "namespace": "x"}},
                     {"name": "other", "context": {"cluster": "other", "user": "sa"}}],
    })  # fmt: skip

    reduced = reduce_kubeconfig(text)
    stored = yaml.safe_load(reduced.to_yaml())

    assert (reduced.server, reduced.token, reduced.certificate_authority_data) == (
        "https://k8s.example.com:6443", "tok-123", ca)
    assert stored["clusters"] == [{"name": "pool", "cluster": {"server": "https://k8s.example.com:6443",
                                                              "certificate-authority-data": ca}}]  # fmt: skip
    assert stored["users"] == [{"name": "pool", "user": {"token": "tok-123"}}]
    assert "preferences" not in stored and "other" not in reduced.to_yaml()


def test_several_contexts_without_current_context_and_clear_text_credentials_are_refused():
    two = {"clusters": [{"name": "a", "cluster": {"server": PUBLIC_SERVER}}],
           "contexts": [{"name": "a", "context": {"cluster": "a"}}, {"name": "b", "context": {"cluster": "a"}}]}
    with pytest.raises(KubeconfigRefused) as exc:
        reduce_kubeconfig(yaml.safe_dump(two))
    assert exc.value.field == "current-context"
    plain = {"clusters": [{"name": "a", "cluster": {"server": "http://8.8.8.8"}}],
             "users": [{"name": "u", "user": {"token": "abc"}}]}  # fmt: skip
    with pytest.raises(KubeconfigRefused) as exc:
        reduce_kubeconfig(yaml.safe_dump(plain))
    assert exc.value.field == "clusters[a].cluster.server" and "clear text" in exc.value.message


def test_a_yaml_error_never_quotes_the_kubeconfig():
    with pytest.raises(KubeconfigRefused) as exc:
        reduce_kubeconfig("users:\n- user: {token: sekret-in-line\n")
    assert "sekret" not in str(exc.value) and "line" in str(exc.value)


# --- Refused at save time through every entry point; nothing runs, nothing is read -------------


def _assert_nothing_ran_or_leaked(trap, *texts: str) -> None:
    assert not trap["marker"].exists(), "the exec plugin ran"
    for text in texts:
        assert SECRET not in text


def test_the_form_refuses_exec_and_token_file_naming_the_field(trap, tenants, operator):
    client = login(operator)
    for key, field in (("exec", "users[attacker].user.exec"), ("token_file", "users[attacker].user.tokenFile")):
        response = client.post(reverse("deployments:pool_create"),
                               {"name": f"p-{key}", "kind": "kubeconfig", "engine_label": "vllm", "kubeconfig": trap[key]})  # fmt: skip
        html = response.content.decode()
        assert response.status_code == 200 and field in html
        _assert_nothing_ran_or_leaked(trap, html)
    # Typing it in (htmx field validation) says the same.
    partial = client.post(reverse("deployments:pool_create"),
                          {"name": "p", "kind": "kubeconfig", "engine_label": "vllm", "kubeconfig": trap["both"],
                           "_validate": "kubeconfig"}, HTTP_HX_REQUEST="true").content.decode()  # fmt: skip
    assert "users[attacker].user.exec" in partial
    _assert_nothing_ran_or_leaked(trap, partial)
    assert not ComputePool.objects.exists()


def test_the_api_refuses_exec_and_token_file_naming_the_field(trap, tenants, operator):
    client = api(operator)
    for key, field in (("exec", "exec"), ("token_file", "tokenFile"), ("both", "exec")):
        response = client.post("/api/v1/pools/", {"name": f"p-{key.replace('_', '-')}", "kind": "kubeconfig",
                                                   "engine_label": "vllm", "kubeconfig": trap[key]}, format="json")  # fmt: skip
        assert response.status_code == 400
        assert f"users[attacker].user.{field}" in response.json()["kubeconfig"][0]
        _assert_nothing_ran_or_leaked(trap, response.content.decode())
    pool = pool_create(user=operator, organization=tenants.org, name="ok", kind="kubeconfig",
                       engine_label="vllm", kubeconfig=trap["kubeconfig"]({"token": "abc"}))  # fmt: skip
    patched = client.patch(f"/api/v1/pools/{pool.pk}/", {"kubeconfig": trap["token_file"]}, format="json")
    assert patched.status_code == 400 and "tokenFile" in patched.json()["kubeconfig"][0]
    _assert_nothing_ran_or_leaked(trap, patched.content.decode())
    pool.refresh_from_db()
    assert "tokenFile" not in pool.kubeconfig and yaml.safe_load(pool.kubeconfig)["users"][0]["user"] == {"token": "abc"}


def test_apply_refuses_exec_and_token_file_naming_the_field(trap, tenants, operator, tmp_path):
    manifest = tmp_path / "pool.yaml"
    docs = [
        {"apiVersion": "modeldeck.io/v1", "kind": "ComputePool", "metadata": {"name": name},
         "spec": {"kind": "kubeconfig", "engine_label": "vllm", "kubeconfig": trap[key]}}
        for name, key in (("with-exec", "exec"), ("with-token-file", "token_file"))
    ]  # fmt: skip
    manifest.write_text(yaml.safe_dump_all(docs))
    out = io.StringIO()

    with pytest.raises(CommandError):
        call_command("apply", "-f", str(manifest), "--user", operator.username, "--organization", "acme", stdout=out)

    text = out.getvalue()
    assert "computepool/with-exec: kubeconfig: users[attacker].user.exec" in text
    assert "computepool/with-token-file: kubeconfig: users[attacker].user.tokenFile" in text
    _assert_nothing_ran_or_leaked(trap, text)
    assert not ComputePool.objects.exists()


def test_the_django_admin_refuses_exec_naming_the_field(trap, tenants):
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-secret-123")
    MembershipFactory(organization=tenants.org, role=Role.MEMBER, user=root)  # REST keys belong to an org
    response = login(root).post(reverse("admin:deployments_computepool_add"), {
        "organization": tenants.org.pk, "name": "adm", "kind": "kubeconfig", "engine_label": "vllm",
        "new_kubeconfig": trap["both"], "api_url": "", "region": "", "description": "",
    })  # fmt: skip
    html = response.content.decode()
    assert response.status_code == 200 and "users[attacker].user.exec" in html
    _assert_nothing_ran_or_leaked(trap, html)
    assert not ComputePool.objects.exists()
    # A usable kubeconfig is saved through the service: reduced, and never shown again.
    response = login(root).post(reverse("admin:deployments_computepool_add"), {
        "organization": tenants.org.pk, "name": "adm", "kind": "kubeconfig", "engine_label": "vllm",
        "new_kubeconfig": trap["kubeconfig"]({"token": "admin-made-token"}), "api_url": "", "region": "",
        "description": "",
    })  # fmt: skip
    assert response.status_code == 302
    pool = ComputePool.objects.get(name="adm")
    assert pool.managed_by == PoolManager.OPERATOR
    assert yaml.safe_load(pool.kubeconfig)["users"][0] == {"name": "pool", "user": {"token": "admin-made-token"}}
    page = login(root).get(reverse("admin:deployments_computepool_change", args=[pool.pk])).content.decode()
    assert "admin-made-token" not in page


def test_a_stored_unreduced_kubeconfig_is_refused_by_the_driver_without_running_anything(
    trap, tenants, operator, model, bundle
):
    # A row from before reduction existed (or written around the services): the driver reduces too.
    pool = ComputePool.objects.create(organization=tenants.org, name="legacy", kind=PoolKind.KUBECONFIG,
                                      kubeconfig=trap["both"], engine_label="vllm")  # fmt: skip
    with pytest.raises(kube.PermanentKubeError) as exc:
        kube.client_for(pool)
    assert "users[attacker].user.exec" in exc.value.message

    result = pool_test_connection(user=operator, pool=pool)
    assert result["ok"] is False and "users[attacker].user.exec" in result["error"]

    from deployments.services import deployment_create
    from deployments.tasks import sync_status

    deployment = deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=pool,
                                   name="chat", spec={"resources": {"cpu": "1", "memory": "1Gi", "gpus": 0},  # a CPU build: 0 GPUs
                                         "image": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5"},
                                   bundle=bundle)  # fmt: skip
    sync_status()
    deployment.refresh_from_db()
    # Failed by the push, then Unknown by the status sync: either way, saying why.
    assert deployment.state in (DeploymentState.FAILED, DeploymentState.UNKNOWN)
    assert "users[attacker].user.exec" in deployment.state_reason
    pool.refresh_from_db()
    events = " ".join(deployment.events.values_list("message", flat=True))
    _assert_nothing_ran_or_leaked(trap, json.dumps(pool.last_check), deployment.state_reason, events)


# --- Errors in fixed words: no remote body ----------------------------------------------------------


@pytest.fixture
def hostile_server() -> Iterator[dict]:
    """A local HTTP server on a free port: answers `status` with a distinctive body."""
    state = {"status": 401, "content_type": "application/json"}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = json.dumps({"kind": "Status", "message": REMOTE_BODY, "details": {"causes": [
                {"field": "spec.replicas", "message": REMOTE_BODY}]}}).encode()  # fmt: skip
            if state["content_type"] != "application/json":
                body = REMOTE_BODY.encode()
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(state["status"])
            self.send_header("Content-Type", state["content_type"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PATCH = do_POST = do_DELETE = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def _kubeconfig_at(url: str) -> str:
    return yaml.safe_dump({"clusters": [{"name": "c", "cluster": {"server": url}}]})


@pytest.mark.parametrize(
    ("status", "content_type", "words"),
    [
        (401, "application/json", "The cluster refused the credentials (HTTP 401)"),
        (403, "application/json", "(HTTP 403)"),
        (500, "application/json", "answered HTTP 500"),
        (502, "text/html", "answered HTTP 502"),
        (200, "text/plain", "not like a Kubernetes API server"),
    ],
)
def test_test_connection_never_shows_the_remote_body(hostile_server, tenants, operator, status, content_type, words):
    hostile_server.update(status=status, content_type=content_type)
    pool = pool_create(user=operator, organization=tenants.org, name="hostile", kind="kubeconfig",
                       engine_label="vllm", kubeconfig=_kubeconfig_at(hostile_server["url"]))  # fmt: skip

    html = login(operator).post(reverse("deployments:pool_test", args=[pool.pk]), HTTP_HX_REQUEST="true").content.decode()
    result = api(operator).post(f"/api/v1/pools/{pool.pk}/test/").json()

    pool.refresh_from_db()
    assert result["ok"] is False and words in result["error"]
    assert "Could not connect" in html and words in html and "What to do:" in html
    for text in (html, json.dumps(result), json.dumps(pool.last_check)):
        assert REMOTE_BODY not in text and "REMOTE-BODY" not in text


def test_deployment_events_never_show_the_remote_body(hostile_server, tenants, operator, model, bundle):
    from deployments.services import deployment_create

    hostile_server.update(status=422)
    pool = pool_create(user=operator, organization=tenants.org, name="hostile", kind="kubeconfig",
                       engine_label="vllm", kubeconfig=_kubeconfig_at(hostile_server["url"]))  # fmt: skip
    deployment = deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=pool,
                                   name="chat", spec={"resources": {"cpu": "1", "memory": "1Gi", "gpus": 0},  # a CPU build: 0 GPUs
                                         "image": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5"},
                                   bundle=bundle)  # fmt: skip
    deployment.refresh_from_db()

    # A field path from the Status's causes is the one part kept: it says where to look.
    assert deployment.state == DeploymentState.FAILED
    assert "(HTTP 422) at spec.replicas" in deployment.state_reason
    events = " ".join(deployment.events.values_list("message", flat=True))
    assert "HTTP 422" in events
    assert REMOTE_BODY not in deployment.state_reason + events


def test_unreachable_errors_are_fixed_words():
    error = kube.classify(ConnectionRefusedError(111, "Connection refused by 10.1.2.3 says " + REMOTE_BODY))
    assert isinstance(error, kube.PoolUnreachable)
    assert "connection refused" in error.message and REMOTE_BODY not in error.message


# --- Who may register, edit and test pools -----------------------------------------------------------


def test_organization_admins_cannot_manage_pools_by_default(tenants, pool):
    owner_ui, owner_api = login(tenants.owner), api(tenants.owner)
    kubeconfig = _kubeconfig_at(PUBLIC_SERVER)

    assert owner_ui.get(reverse("deployments:pool_create")).status_code == 403
    assert owner_ui.post(reverse("deployments:pool_create"), {"name": "mine", "kind": "kubeconfig",
                         "engine_label": "vllm", "kubeconfig": kubeconfig}).status_code == 403  # fmt: skip
    assert owner_ui.get(reverse("deployments:pool_edit", args=[pool.pk])).status_code == 403
    assert owner_ui.post(reverse("deployments:pool_test", args=[pool.pk])).status_code == 403
    assert owner_ui.post(reverse("deployments:pool_delete", args=[pool.pk])).status_code == 403
    assert owner_api.post("/api/v1/pools/", {"name": "mine", "kind": "kubeconfig", "engine_label": "vllm",
                                             "kubeconfig": kubeconfig}, format="json").status_code == 403  # fmt: skip
    assert owner_api.patch(f"/api/v1/pools/{pool.pk}/", {"region": "x"}, format="json").status_code == 403
    assert owner_api.post(f"/api/v1/pools/{pool.pk}/test/").status_code == 403
    # They still see and use the pools granted to them.
    assert owner_api.get(f"/api/v1/pools/{pool.pk}/").status_code == 200
    html = owner_ui.get(reverse("deployments:pool_detail", args=[pool.pk])).content.decode()
    assert reverse("deployments:pool_test", args=[pool.pk]) not in html
    assert reverse("deployments:pool_edit", args=[pool.pk]) not in html
    pool.refresh_from_db()
    assert pool.region == "" and not ComputePool.objects.filter(name="mine").exists()


def test_operators_grant_pools_to_any_organization(tenants):
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-secret-123")
    MembershipFactory(organization=tenants.org, role=Role.MEMBER, user=root)  # REST keys belong to an org
    response = api(root).post("/api/v1/pools/", {"organization": tenants.other_org.pk, "name": "granted",
                                                 "kind": "kubeconfig", "engine_label": "vllm",
                                                 "kubeconfig": _kubeconfig_at(PUBLIC_SERVER)}, format="json")  # fmt: skip
    assert response.status_code == 201, response.json()
    assert response.json()["managed_by"] == "operator"
    pool = ComputePool.objects.get(name="granted")
    assert pool.organization == tenants.other_org
    assert api(tenants.outsider).get(f"/api/v1/pools/{pool.pk}/").status_code == 200
    assert api(tenants.owner).get(f"/api/v1/pools/{pool.pk}/").status_code == 404


def test_with_the_setting_organization_admins_bring_their_own_cluster_at_public_addresses(
    settings, tenants, operator, pool, hostile_server
):
    settings.ORG_ADMINS_MAY_ADD_POOLS = True
    owner_api = api(tenants.owner)

    made = owner_api.post("/api/v1/pools/", {"name": "mine", "kind": "kubeconfig", "engine_label": "vllm",
                                             "kubeconfig": _kubeconfig_at(PUBLIC_SERVER)}, format="json")  # fmt: skip
    assert made.status_code == 201 and made.json()["managed_by"] == "organization"
    for server in ("http://127.0.0.1:6443", "http://169.254.169.254", "https://10.0.0.5:6443",
                   "https://[::1]:6443", "https://localhost:6443"):  # fmt: skip
        refused = owner_api.post("/api/v1/pools/", {"name": "internal", "kind": "kubeconfig", "engine_label": "vllm",
                                                    "kubeconfig": _kubeconfig_at(server)}, format="json")  # fmt: skip
        assert refused.status_code == 400, server
        assert "private address" in refused.json()["kubeconfig"][0]
    for body in ({"name": "sb", "kind": "sandbox", "engine_label": "vllm"},
                 {"name": "ic", "kind": "in_cluster", "engine_label": "vllm"},
                 {"name": "pv", "kind": "kubeconfig", "engine_label": "vllm", "private_addresses_allowed": True,
                  "kubeconfig": _kubeconfig_at(PUBLIC_SERVER)}):  # fmt: skip
        assert owner_api.post("/api/v1/pools/", body, format="json").status_code == 400, body
    # Their own pool they edit and test; an operator's grant they don't.
    mine = ComputePool.objects.get(name="mine")
    assert owner_api.patch(f"/api/v1/pools/{mine.pk}/", {"region": "eu"}, format="json").status_code == 200
    assert owner_api.patch(f"/api/v1/pools/{pool.pk}/", {"region": "eu"}, format="json").status_code == 403
    assert owner_api.post(f"/api/v1/pools/{pool.pk}/test/").status_code == 403
    # The outsider, even an admin elsewhere, never sees it.
    assert api(tenants.outsider).get(f"/api/v1/pools/{mine.pk}/").status_code == 404
    assert api(tenants.outsider).post(f"/api/v1/pools/{mine.pk}/test/").status_code == 404
    assert login(tenants.outsider).get(reverse("deployments:pool_detail", args=[mine.pk])).status_code == 404

    # An operator may allow a private address; an organization's new kubeconfig drops that again.
    internal = _kubeconfig_at(hostile_server["url"])
    with pytest.raises(ValidationError):
        pool_update(user=tenants.owner, pool=mine, kubeconfig=internal)
    pool_update(user=operator, pool=mine, private_addresses_allowed=True)
    mine = pool_update(user=tenants.owner, pool=mine, kubeconfig=_kubeconfig_at(PUBLIC_SERVER))
    assert mine.private_addresses_allowed is False and mine.managed_by == PoolManager.ORGANIZATION
    with pytest.raises(ValidationError):
        pool_update(user=tenants.owner, pool=mine, private_addresses_allowed=True)


def test_the_driver_refuses_an_organization_pool_that_now_points_inside(tenants, operator, hostile_server):
    # Saved while public (or before this rule): at client-build time the address is judged again.
    pool = ComputePool.objects.create(organization=tenants.org, name="moved", kind=PoolKind.KUBECONFIG,
                                      managed_by=PoolManager.ORGANIZATION, engine_label="vllm",
                                      kubeconfig=_kubeconfig_at(hostile_server["url"]))  # fmt: skip
    result = pool_test_connection(user=operator, pool=pool)
    assert result["ok"] is False and "private address" in result["error"]
    ComputePool.objects.filter(pk=pool.pk).update(private_addresses_allowed=True)
    pool.refresh_from_db()
    assert "HTTP 401" in pool_test_connection(user=operator, pool=pool)["error"]  # now it is asked


# --- Sandbox pools ----------------------------------------------------------------------------------


def test_sandbox_pools_only_in_the_embedded_mode_and_only_at_sandboxes_modeldeck_started(
    settings, tenants, operator, cluster, pool
):
    for url in ("http://10.0.0.7:8093", "http://127.0.0.1:6379", "http://169.254.169.254"):
        with pytest.raises(ValidationError) as exc:
            pool_create(user=operator, organization=tenants.org, name="sb", kind="sandbox", engine_label="vllm",
                        api_url=url)  # fmt: skip
        assert "api_url" in exc.value.message_dict, url
    created = pool_create(user=operator, organization=tenants.org, name="sb", kind="sandbox", engine_label="vllm",
                          api_url=cluster.url)  # fmt: skip
    assert pool_test_connection(user=operator, pool=created)["ok"] is True

    settings.SANDBOX_POOLS_ENABLED = False  # production: REDIS_URL set
    with pytest.raises(ValidationError) as exc:
        pool_create(user=operator, organization=tenants.org, name="sb2", kind="sandbox", engine_label="vllm")
    assert "embedded mode" in exc.value.message_dict["kind"][0]
    result = pool_test_connection(user=operator, pool=pool)
    assert result["ok"] is False and "embedded mode" in result["error"]
    response = api(operator).post("/api/v1/pools/", {"name": "sb3", "kind": "sandbox", "engine_label": "vllm"},
                                  format="json")  # fmt: skip
    assert response.status_code == 400 and "embedded mode" in str(response.json())


def test_members_and_viewers_cannot_test_pools_any_more(tenants, pool):
    with pytest.raises(PermissionDenied):
        pool_test_connection(user=tenants.member, pool=pool)
    assert login(tenants.member).post(reverse("deployments:pool_test", args=[pool.pk])).status_code == 403


def test_insecure_skip_tls_verify_is_accepted_and_the_pool_page_warns(tenants, operator):
    text = yaml.safe_dump({"clusters": [{"name": "c", "cluster": {"server": PUBLIC_SERVER,
                                                                  "insecure-skip-tls-verify": True}}]})  # fmt: skip
    pool = pool_create(user=operator, organization=tenants.org, name="lab", kind="kubeconfig",
                       engine_label="vllm", kubeconfig=text)  # fmt: skip
    html = login(tenants.owner).get(reverse("deployments:pool_detail", args=[pool.pk])).content.decode()
    assert 'id="pool-tls-off"' in html
    assert kube.client_for(pool).configuration.verify_ssl is False


def test_client_certificates_come_from_the_kubeconfig_data_into_private_files():
    import base64
    import os
    import stat

    from deployments.kube.client import configuration_from

    cert = b"-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
    key = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIkey\n-----END EC PRIVATE KEY-----\n"
    text = yaml.safe_dump({
        "clusters": [{"name": "c", "cluster": {"server": PUBLIC_SERVER}}],
        "users": [{"name": "u", "user": {"client-certificate-data": base64.b64encode(cert).decode(),
                                         "client-key-data": base64.b64encode(key).decode()}}],
    })  # fmt: skip

    cfg = configuration_from(reduce_kubeconfig(text))

    assert Path(cfg.cert_file).read_bytes() == cert and Path(cfg.key_file).read_bytes() == key
    assert stat.S_IMODE(os.stat(cfg.key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(cfg.key_file)).st_mode) == 0o700


def test_an_organization_pool_is_called_at_the_address_its_check_resolved(tenants, monkeypatch):
    """DNS rebinding: the check resolved the name, and urllib3 resolved it again to connect (a
    tenant's DNS can answer a public address first and 127.0.0.1 next). The client is now given
    the address the check judged, with TLS still naming the host; a name that doesn't resolve
    is refused, not let through to a second lookup."""
    answers = {"kube.rebind.example": ["93.184.216.34"]}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            if not answers[host]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    pool = ComputePool.objects.create(organization=tenants.org, name="byo", kind=PoolKind.KUBECONFIG,
                                      managed_by=PoolManager.ORGANIZATION, engine_label="vllm",
                                      kubeconfig=_kubeconfig_at("https://kube.rebind.example:6443"))  # fmt: skip
    cfg = configuration_for(pool)
    assert (cfg.host, cfg.tls_server_name) == ("https://93.184.216.34:6443", "kube.rebind.example")

    answers["kube.rebind.example"] = ["127.0.0.1"]
    with pytest.raises(PermanentKubeError, match="resolves to 127.0.0.1"):
        configuration_for(pool)
    answers["kube.rebind.example"] = []
    with pytest.raises(PermanentKubeError, match="does not resolve"):
        configuration_for(pool)
    # An operator's pool (or one allowed private addresses) is called by its name, as configured.
    ComputePool.objects.filter(pk=pool.pk).update(private_addresses_allowed=True)
    pool.refresh_from_db()
    assert configuration_for(pool).host == "https://kube.rebind.example:6443"


@pytest.mark.parametrize(("address", "public"), [
    ("2002:7f00:1::", False), ("64:ff9b::7f00:1", False), ("64:ff9b::a9fe:a9fe", False), ("::7f00:1", False),
    ("64:ff9b::808:808", True), ("2002:808:808::", True), ("2606:4700::1111", True), ("8.8.8.8", True),
])  # fmt: skip
def test_ipv6_forms_that_carry_a_private_ipv4_are_not_public(address, public):
    """6to4, NAT64 and IPv4-compatible addresses are 'global' to Python, yet where routed they
    lead to the IPv4 inside them: 127.0.0.1, 169.254.169.254 (security review)."""
    from deployments.kube.network import is_public_address  # noqa: PLC0415 - the one rule, under test

    assert is_public_address(address) is public
