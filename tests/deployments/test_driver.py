"""The Kubernetes driver: connecting (sandbox URL, kubeconfig), error classes, secrets it applies."""

from __future__ import annotations

import base64
import logging

import pytest
from kubernetes.client.exceptions import ApiException

from deployments import kube
from deployments.models import ComputePool, DeploymentState, PoolKind
from projects.models import IntegrationKind
from projects.services import integration_set
from tests.deployments.conftest import state_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_sandbox_pool_connects_to_its_api_url(pool, cluster):
    api_client = kube.client_for(pool)
    assert api_client.configuration.host == cluster.url
    result = kube.test_connection(pool)
    assert result["ok"] is True and len(result["nodes"]) == 2


def test_kubeconfig_pool_connects_through_the_encrypted_kubeconfig(tenants, cluster, emulator):
    pool = ComputePool.objects.create(organization=tenants.org, name="kc", kind=PoolKind.KUBECONFIG,
                                      kubeconfig=emulator.kubeconfig(), engine_label="vllm")  # fmt: skip
    pool.refresh_from_db()

    with kube.kube_for(pool) as k:
        assert kube.ensure_namespace(k, "from-kubeconfig") is True
        assert kube.ensure_namespace(k, "from-kubeconfig") is False
    assert emulator.get_object("Namespace", None, "from-kubeconfig") is not None


def test_a_broken_kubeconfig_is_a_permanent_error_in_words(tenants):
    pool = ComputePool(organization=tenants.org, name="bad", kind=PoolKind.KUBECONFIG, kubeconfig="clusters: [",
                       engine_label="vllm")  # fmt: skip

    with pytest.raises(kube.PermanentKubeError) as exc:
        kube.client_for(pool)

    assert "kubeconfig is not valid YAML" in exc.value.message


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (400, True),
        (403, True),
        (404, True),
        (422, True),
        (409, False),
        (429, False),
        (500, False),
        (503, False),
    ],
)
def test_api_errors_are_classified(status, permanent):
    error = kube.classify(ApiException(status=status, reason="x"), kind="Deployment")
    assert error.permanent is permanent
    assert isinstance(error, kube.PermanentKubeError if permanent else kube.TransientKubeError)


def test_connection_errors_are_transient_and_say_the_pool_is_unreachable(tenants):
    pool = ComputePool(organization=tenants.org, name="gone", kind=PoolKind.SANDBOX, api_url="http://127.0.0.1:9",
                       engine_label="vllm")  # fmt: skip
    with pytest.raises(kube.PoolUnreachable) as exc, kube.kube_for(pool) as k:
        kube.ensure_namespace(k, "x")
    assert "could not be reached" in exc.value.message


def test_the_hf_token_secret_is_created_and_referenced_but_never_logged(
    tenants, deploy, emulator, caplog
):
    caplog.set_level(logging.DEBUG)
    integration_set(user=tenants.owner, project=tenants.project, kind=IntegrationKind.HUGGINGFACE,
                    secret="hf_supersecret_token")  # fmt: skip

    deployment = deploy("chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    secret = emulator.get_object("Secret", "acme-research", "modeldeck-hf-token")
    assert base64.b64decode(secret["data"]["token"]).decode() == "hf_supersecret_token"
    container = emulator.get_object("Deployment", "acme-research", "chat-r1")["spec"]["template"][
        "spec"
    ]["containers"][0]
    (hf_env,) = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
    assert hf_env["valueFrom"]["secretKeyRef"] == {"name": "modeldeck-hf-token", "key": "token"}
    assert "hf_supersecret_token" not in caplog.text
    assert not deployment.events.filter(message__contains="hf_supersecret_token").exists()


def test_server_side_apply_keeps_fields_other_managers_own(deploy, emulator):
    """An annotation added by someone else (e.g. an operator) survives our re-apply."""
    from deployments.tasks import push

    deployment = deploy("chat")
    obj = emulator.get_object("Service", "acme-research", "chat")
    obj["metadata"].setdefault("annotations", {})["example.com/owner"] = "platform-team"
    emulator.put_object(obj)

    push(deployment.pk)

    assert (
        emulator.get_object("Service", "acme-research", "chat")["metadata"]["annotations"][
            "example.com/owner"
        ]
        == "platform-team"
    )


def test_a_namespace_that_vanished_mid_push_is_transient():
    body = '{"kind":"Status","message":"namespaces \\"x\\" not found","details":{"name":"x","kind":"namespaces"}}'
    error = kube.classify(
        ApiException(status=404, reason="Not Found", body=body), kind="Deployment"
    )
    assert isinstance(error, kube.TransientKubeError)
