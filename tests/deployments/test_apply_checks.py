"""What `apply -f` refuses before it builds anything (YAML anchors and aliases, an empty file, text
that is not YAML), and a dry run that checks what the real apply checks, leaving nothing behind."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from catalog.models import CatalogModel
from deployments.apply import Context, ManifestError, apply_documents, load_documents
from deployments.kube.kubeconfig import KubeconfigRefused, reduce_kubeconfig
from deployments.models import ComputePool, Endpoint, ModelDeployment, PoolKind
from projects.models import GpuReservation
from sharing.models import AuditEntry
from tests.factories import rest_api_client

pytestmark = pytest.mark.django_db

ALIASES = "YAML anchors and aliases (&name / *name) aren't accepted; write the values out."

# Small enough to be harmless even where aliases are expanded: the test asserts the refusal.
SMALL_ALIAS = """
apiVersion: modeldeck.io/v1
kind: Endpoint
metadata: {name: ep, project: research}
spec:
  path: &p /ep
  note: *p
"""

# "Billion laughs": under 1 KB of text, 9**9 strings once expanded.
BOMB = "apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: {name: ep, project: research}\nspec:\n" + "".join(
    f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(10)
) + "  path: *l9\n"


def _post(user, body):
    return rest_api_client(user).post("/api/v1/apply/", body, format="json")


def test_aliases_in_a_rest_apply_are_a_400_in_words(tenants):
    response = _post(tenants.owner, {"manifest": SMALL_ALIAS})

    assert response.status_code == 400, response.content
    assert response.json() == {"manifest": [f"line 6, column 9: {ALIASES}"]}
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_billion_laughs_is_refused_at_once(tenants, dry_run):
    assert len(BOMB) < 1000
    started = time.monotonic()
    response = _post(tenants.owner, {"manifest": BOMB, "dry_run": dry_run})
    assert response.status_code == 400 and ALIASES in response.json()["manifest"][0]
    assert time.monotonic() - started < 2


def test_aliases_through_manage_py_apply_name_the_file(tenants, tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text(SMALL_ALIAS)
    with pytest.raises(CommandError) as exc:
        call_command("apply", "-f", str(path), "--user", "owner", "--organization", "acme", stdout=io.StringIO())
    assert str(exc.value) == f"{path}: line 6, column 9: {ALIASES}"


@pytest.mark.parametrize("depth, words", [(200, "nests deeper than 64 levels"), (50_000, "line 4")])
def test_nesting_too_deep_is_a_400_not_a_500(tenants, depth, words):
    deep = "apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: {name: ep}\nspec: {x: " + "[" * depth + "]" * depth + "}\n"
    response = _post(tenants.owner, {"manifest": deep})
    assert response.status_code == 400 and words in response.json()["manifest"][0]


def test_a_nul_character_in_a_manifest_is_refused_where_it_is(tenants):
    manifest = 'apiVersion: modeldeck.io/v1\nkind: Model\nmetadata: {name: m}\nspec: {source: custom, storage_uri: "s3://bkt/m", description: "a\\0b"}\n'
    response = _post(tenants.owner, {"manifest": manifest})
    assert response.status_code == 400, response.content
    assert response.json()["manifest"][0].startswith("line 4, column 64: A NUL character")
    assert not CatalogModel.objects.filter(name="m").exists()


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ("kind: Endpoint\nmetadata: {name: yes, project: research}\nspec: {path: /y}\n",
         "document 1: metadata.name must be text"),
        ("kind: Endpoint\nmetadata: {name: y, project: [research]}\nspec: {path: /y}\n",
         "document 1: metadata.project must be text"),
        ("kind: Model\nmetadata: {name: m}\nspec: {source: huggingface, repo_id: acme/m, revision: 1234567}\n",
         "model/m: spec.revision must be text"),
        ("kind: ProfileBundle\nmetadata: {name: b}\nspec: {engine: vllm, image: 5}\n", "profilebundle/b: spec.image must be text"),
        ("kind: ComputePool\nmetadata: {name: p}\nspec: {kind: sandbox, engine_label: 5}\n",
         "computepool/p: spec.engine_label must be text"),
        ("kind: ModelDeployment\nmetadata: {name: d, project: research}\nspec: {model: m, pool: [sandbox]}\n",
         "modeldeployment/d: spec.pool must be text"),
    ],
)
def test_a_value_yaml_reads_as_no_text_is_said_so_not_a_python_error(tenants, manifest, words):
    """QA: `name: yes` (a YAML boolean) answered "'bool' object has no attribute 'strip'", an
    all-digit revision, a bundle's image or a pool's engine label "'int' object has no attribute
    'strip'", a deployment's pool list "no compute pool named ['sandbox']"."""
    response = _post(tenants.owner, {"manifest": "apiVersion: modeldeck.io/v1\n" + manifest})
    text = " ".join(response.json().get("manifest") or response.json().get("lines") or [])
    assert words in text and "put it in quotes" in text and "attribute" not in text, text


def test_a_deployment_without_a_pool_says_the_pool_is_required(tenants):
    manifest = ("apiVersion: modeldeck.io/v1\nkind: Model\nmetadata: {name: m}\nspec: {source: custom, storage_uri: 's3://bkt/m'}\n"
                "---\napiVersion: modeldeck.io/v1\nkind: ModelDeployment\nmetadata: {name: d, project: research}\nspec: {model: m}\n")  # fmt: skip
    response = _post(tenants.owner, {"manifest": manifest, "dry_run": True})
    assert "error: modeldeployment/d: spec.pool is required (a compute pool's name)" in response.json()["lines"]  # was "no compute pool named None"


def test_an_empty_file_says_so(tenants, tmp_path):
    for body in ({"manifest": ""}, {"manifest": "# only a comment\n---\n"}, {"documents": []}):
        response = _post(tenants.owner, body)
        assert response.status_code == 400, (body, response.content)
        assert response.json()["manifest"][0].startswith(
            "The file has no documents; expected one or more `kind: ModelDeployment` documents"
        )
    path = tmp_path / "empty.yaml"
    path.write_text("\n")
    with pytest.raises(CommandError, match=f"^{path} has no documents; expected one or more"):
        call_command("apply", "-f", str(path), "--user", "owner", "--organization", "acme", stdout=io.StringIO())


def test_a_yaml_syntax_error_says_line_and_column_not_unicode_string(tenants, tmp_path):
    text = "apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: {name: ep\n"
    message = _post(tenants.owner, {"manifest": text}).json()["manifest"][0]
    assert message.startswith("The file is not valid YAML at line 4, column 1: "), message
    assert "unicode string" not in message

    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(CommandError) as exc:
        call_command("apply", "-f", str(path), "--user", "owner", "--organization", "acme", stdout=io.StringIO())
    assert str(exc.value).startswith(f"{path} is not valid YAML at line 4, column 1: ")
    assert "unicode string" not in str(exc.value)


def test_aliases_in_a_form_field_are_a_field_error(owner_client, tenants, model, bundle, pool):
    form = {
        "name": "qwen-chat", "project": str(tenants.project.pk), "model": str(model.pk), "pool": str(pool.pk),
        "bundle": str(bundle.pk), "replicas_min": "1", "replicas_max": "1", "cpu": "2", "memory": "8Gi",
        "gpus": "1", "tolerations": "- &t {key: a, operator: Exists}\n- *t\n",
    }  # fmt: skip
    response = owner_client.post(reverse("deployments:create"), {**form, "_validate": "tolerations"},
                                 HTTP_HX_REQUEST="true")  # fmt: skip
    html = response.content.decode()
    assert response.status_code == 200 and 'id="field-tolerations"' in html
    assert "Line 1, column 3: YAML anchors and aliases (&amp;name / *name) aren&#x27;t accepted" in html

    response = owner_client.post(reverse("deployments:create"), form)
    assert response.status_code == 200 and "YAML anchors and aliases" in response.content.decode()
    assert not ModelDeployment.objects.exists()


def test_aliases_in_a_kubeconfig_are_refused_in_words():
    text = "apiVersion: v1\nclusters:\n- &c {name: c, cluster: {server: 'https://k.example'}}\n- *c\n"
    with pytest.raises(KubeconfigRefused) as exc:
        reduce_kubeconfig(text)
    assert exc.value.message == f"Line 3, column 3: {ALIASES}"


# --- dry run of a new deployment -----------------------------------------------------------------


@pytest.fixture
def offline_pool(tenants) -> ComputePool:
    # Nothing listens on port 9: a push that ran would fail, and none should run.
    return ComputePool.objects.create(organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip


NEW = """
apiVersion: modeldeck.io/v1
kind: ModelDeployment
metadata: {name: chat, project: research}
spec:
  model: Qwen2.5 0.5B Instruct
  pool: offline
  bundle: vllm-test
  served_model_name: chat
  replicas: {min: 1, max: 1}
  resources: {cpu: "2", memory: 8Gi, gpus: 1}
"""


def _apply(tenants, text: str, *, dry_run: bool) -> tuple[int, list[str]]:
    out: list[str] = []
    ctx = Context(user=tenants.owner, organization=tenants.org, dry_run=dry_run)
    return apply_documents(ctx, load_documents(text), dry_run=dry_run, write=out.append), out


@pytest.mark.parametrize(
    "edit, error",
    [
        (("gpus: 1}", "gpus: 1}\n  extra_args: [--port, '9000']"), "extra_args: --port is set by ModelDeck"),
        (("gpus: 1}", "gpus: 6}\n  replicas: {min: 2, max: 2}"), "quota of 8 GPUs"),
        (("pool: offline", "pool: elsewhere"), "no compute pool named 'elsewhere'"),
        (("served_model_name: chat", "served_model_name: 'has spaces'"), "served_model_name"),
        (("gpus: 1}", "gpus: 1}\n  context_length: 12"), "context_length"),
    ],
)
def test_a_dry_run_of_a_new_deployment_reports_what_the_apply_would_refuse(
    tenants, model, bundle, offline_pool, edit, error
):
    assert edit[0] in NEW
    text = NEW.replace(*edit, 1)

    dry_errors, dry = _apply(tenants, text, dry_run=True)
    real_errors, real = _apply(tenants, text, dry_run=False)

    assert real_errors == 1 and error in real[0], real
    assert dry_errors == 1 and dry == real  # the same words, not "would be created"
    assert not ModelDeployment.objects.exists()


def test_a_dry_run_leaves_nothing_behind(tenants, model, bundle, offline_pool, django_capture_on_commit_callbacks):
    audits = AuditEntry.objects.count()
    with django_capture_on_commit_callbacks() as callbacks:
        errors, out = _apply(tenants, NEW, dry_run=True)

    assert errors == 0 and out[0].startswith("modeldeployment/chat would be created:"), out
    assert callbacks == []  # no push, no gateway invalidation queued
    assert not ModelDeployment.objects.exists() and not GpuReservation.objects.exists()
    assert AuditEntry.objects.count() == audits


def test_a_dry_run_sees_what_earlier_documents_of_the_file_create(tenants, model, bundle, offline_pool):
    text = """
apiVersion: modeldeck.io/v1
kind: Endpoint
metadata: {name: chat, project: research}
spec: {path: /chat}
---""" + NEW.replace("served_model_name: chat", "served_model_name: chat\n  endpoint: chat")

    errors, out = _apply(tenants, text, dry_run=True)
    assert errors == 0, out
    assert [line.split(":")[0] for line in out] == ["endpoint/chat would be created", "modeldeployment/chat would be created"]
    assert not Endpoint.objects.exists() and not ModelDeployment.objects.exists()

    # …and reports an error of a later document the way the real apply would.
    errors, out = _apply(tenants, text.replace("gpus: 1}", "gpus: 9}"), dry_run=True)
    assert errors == 1 and out[1].startswith("error: modeldeployment/chat: ") and "quota" in out[1], out
    assert not Endpoint.objects.exists()


def test_a_dry_run_of_a_pool_says_who_may_register_one(tenants):
    text = """
apiVersion: modeldeck.io/v1
kind: ComputePool
metadata: {name: mine}
spec: {kind: sandbox, api_url: "http://127.0.0.1:9", engine_label: vllm}
"""
    dry_errors, dry = _apply(tenants, text, dry_run=True)
    real_errors, real = _apply(tenants, text, dry_run=False)
    assert dry_errors == real_errors == 1 and dry == real
    assert dry[0] == ("error: computepool/mine: Platform operators register compute pools; ask one to grant your "
                      "organization a pool.")  # fmt: skip


def test_manage_py_dry_run_says_nothing_was_changed(tenants, model, bundle, offline_pool, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(NEW.replace("gpus: 1}", "gpus: 1}\n  extra_args: [--port, '9000']"))
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"^1 document\(s\) would not be applied; nothing was changed \(dry run\)$"):
        call_command("apply", "-f", str(path), "--dry-run", "--user", "owner", "--organization", "acme", stdout=out)
    assert out.getvalue().startswith("error: modeldeployment/chat: extra_args: --port is set by ModelDeck")


def test_rest_dry_run_of_a_new_deployment_is_a_422_with_the_error(tenants, model, bundle, offline_pool):
    response = _post(tenants.owner, {"manifest": NEW.replace("pool: offline", "pool: elsewhere"), "dry_run": True})
    assert response.status_code == 422, response.content
    assert response.json() == {"dry_run": True, "errors": 1,
                               "lines": ["error: modeldeployment/chat: no compute pool named 'elsewhere'"]}  # fmt: skip


def test_load_documents_is_a_manifest_error_for_each_problem():
    for text in ("", SMALL_ALIAS, "a: [1", "- 1"):
        with pytest.raises(ManifestError):
            load_documents(text)


def test_an_image_name_in_an_error_keeps_the_users_spelling(tenants, model, bundle, offline_pool):
    errors, out = _apply(tenants, NEW.replace("gpus: 1}", "gpus: 0}"), dry_run=False)
    assert errors == 1
    # The error sentence starts with the image: its first letter used to be upper-cased ("Vllm/…").
    assert out == ["error: modeldeployment/chat: resources.gpus: “vllm/vllm-openai:v0.6.3” is a GPU build of vllm: "
                   "give it at least one GPU, or use a CPU image."]  # fmt: skip


# ---- YAML values that are not JSON's (security review) ----------------------------------------
# An impossible date (2001-02-30), an impossible time or an int of 4,301 digits raised a bare
# ValueError: a 500 on apply and on a pool's kubeconfig. Dates now stay text; !!binary, !!set,
# !!omap are refused in words.

BAD = {
    "impossible_date": "a: 2001-02-30\n",
    "bad_time": "a: 2001-02-28 25:00:00\n",
    "int_over_4300_digits": "a: " + "9" * 4301 + "\n",
}


def _raising_client(user):
    client = rest_api_client(user)
    client.raise_request_exception = False
    return client


@pytest.mark.parametrize("text", list(BAD.values()), ids=list(BAD))
def test_apply_manifest_is_a_400_not_a_500(tenants, text):
    response = _raising_client(tenants.member).post("/api/v1/apply/", {"manifest": text, "dry_run": True}, format="json")
    assert response.status_code == 400, (response.status_code, response.content[:200])


ENDPOINT = "apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: {{name: ep, project: research}}\nspec:\n  path: {path}\n"


@pytest.mark.parametrize("path", ["!!binary L2Vw", "!!set {/ep}", "!!omap [a: 1]"])
def test_apply_refuses_yaml_types_json_lacks_in_words(tenants, path):
    response = _raising_client(tenants.member).post(
        "/api/v1/apply/", {"manifest": ENDPOINT.format(path=path), "dry_run": True}, format="json"
    )
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert "isn't accepted; use strings, numbers" in response.content.decode()


@pytest.mark.parametrize("path", ["2024-01-01", "!!timestamp 2024-01-01"])
def test_a_date_in_yaml_stays_the_text_typed(tenants, path):
    response = _raising_client(tenants.member).post(
        "/api/v1/apply/", {"manifest": ENDPOINT.format(path=path), "dry_run": True}, format="json"
    )
    assert response.status_code == 200, (response.status_code, response.content[:300])
    assert f"/{path.removeprefix('!!timestamp ')}" in response.json()["lines"][0]


KUBECONFIG = "clusters:\n- name: c\n  cluster: {server: 'https://93.184.216.34', x: 2001-02-30}\n"


def test_pool_kubeconfig_bad_date_is_a_400(tenants, settings):
    settings.ORG_ADMINS_MAY_ADD_POOLS = True
    response = _raising_client(tenants.owner).post("/api/v1/pools/", {"name": "byo", "kind": "kubeconfig", "engine_label": "vllm",
                                                            "kubeconfig": KUBECONFIG}, format="json")
    assert response.status_code == 400, (response.status_code, response.content[:300])
