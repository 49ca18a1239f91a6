"""Deployment services: quota, engine labels, names, permissions, in-place changes (no cluster needed)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import (
    ComputePool,
    DeploymentEvent,
    DeploymentState,
    ModelDeployment,
    PoolKind,
)
from deployments.services import (
    deployment_activate,
    deployment_create,
    deployment_deactivate,
    deployment_delete,
    deployment_rollback,
    deployment_set_nim_tag,
    deployment_update,
    endpoint_create,
    pool_create,
    pool_delete,
    pool_test_connection,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def offline_pool(tenants) -> ComputePool:
    # Nothing listens on port 9: pushes fail quietly and the deployments stay Pending.
    return ComputePool.objects.create(organization=tenants.org, name="offline", kind=PoolKind.SANDBOX,
                                      api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip


def _create(tenants, model, bundle, pool, name="chat", user=None, **spec):
    return deployment_create(
        user=user or tenants.owner, project=tenants.project, model=model, pool=pool, name=name,
        bundle=bundle, spec={"served_model_name": name, **spec},
    )  # fmt: skip


def test_create_reserves_gpus_and_makes_revision_one(tenants, model, bundle, offline_pool):
    deployment = _create(tenants, model, bundle, offline_pool, replicas={"min": 1, "max": 3},
                         resources={"gpus": 2})  # fmt: skip

    assert deployment.current_revision.number == 1
    assert deployment.current_revision.spec["image"] == "vllm/vllm-openai:v0.6.3"
    assert tenants.project.gpu_used() == 6
    assert DeploymentEvent.objects.filter(
        deployment=deployment, reason="Created", source="console"
    ).exists()


def test_deploy_over_quota_is_refused_with_the_numbers(tenants, model, bundle, offline_pool):
    _create(tenants, model, bundle, offline_pool, name="first", resources={"gpus": 6})

    with pytest.raises(ValidationError) as exc:
        _create(tenants, model, bundle, offline_pool, name="second", resources={"gpus": 3})

    message = exc.value.message_dict["resources.gpus"][0]
    assert "quota of 8 GPUs, 6 are in use: 3 more do not fit" in message
    assert not ModelDeployment.objects.filter(name="second").exists()
    assert tenants.project.gpu_used() == 6


def test_engine_label_mismatch_is_refused_naming_both_labels(tenants, model, offline_pool):
    tgi = ProfileBundle.objects.create(organization=tenants.org, name="tgi", engine="tgi",
                                       image="ghcr.io/huggingface/text-generation-inference:2.4.0")  # fmt: skip

    with pytest.raises(ValidationError) as exc:
        _create(tenants, model, tgi, offline_pool)

    message = exc.value.message_dict["pool"][0]
    assert "“tgi”" in message and "“vllm”" in message
    assert tenants.project.gpu_used() == 0


def test_name_must_be_unique_in_the_project(tenants, model, bundle, offline_pool):
    _create(tenants, model, bundle, offline_pool, name="chat")

    with pytest.raises(ValidationError) as exc:
        _create(tenants, model, bundle, offline_pool, name="chat")

    assert "already has a deployment named" in exc.value.message_dict["name"][0]


def test_bad_names_and_specs_are_field_errors(tenants, model, bundle, offline_pool):
    with pytest.raises(ValidationError) as exc:
        _create(tenants, model, bundle, offline_pool, name="Chat Bot")
    assert "name" in exc.value.message_dict

    with pytest.raises(ValidationError) as exc:
        _create(tenants, model, bundle, offline_pool, replicas={"min": 3, "max": 2})
    assert "replicas.max" in exc.value.message_dict


def test_served_model_name_is_unique_in_the_organization(tenants, model, bundle, offline_pool):
    _create(tenants, model, bundle, offline_pool, name="chat", served_model_name="qwen")

    with pytest.raises(ValidationError) as exc:
        _create(tenants, model, bundle, offline_pool, name="chat2", served_model_name="qwen")

    assert "“chat” already serves" in exc.value.message_dict["served_model_name"][0]


def test_viewers_cannot_deploy_and_outsiders_cannot_use_other_orgs_pools(
    tenants, model, bundle, offline_pool
):
    with pytest.raises(PermissionDenied):
        _create(tenants, model, bundle, offline_pool, user=tenants.viewer)
    foreign = ComputePool.objects.create(organization=tenants.other_org, name="theirs", kind=PoolKind.SANDBOX,
                                         engine_label="vllm")  # fmt: skip
    with pytest.raises(ValidationError) as exc:
        _create(tenants, model, bundle, foreign)
    assert "pool" in exc.value.message_dict


def test_huggingface_model_cannot_change_in_place(tenants, model, bundle, offline_pool):
    deployment = _create(tenants, model, bundle, offline_pool)
    other = CatalogModel.objects.create(organization=tenants.org, name="Other", source="huggingface",
                                        repo_id="org/other")  # fmt: skip

    with pytest.raises(ValidationError) as exc:
        deployment_update(user=tenants.owner, deployment=deployment, spec={}, model=other)

    assert "create a new deployment" in exc.value.message_dict["model"][0]


def test_update_with_the_same_spec_makes_no_revision(tenants, model, bundle, offline_pool):
    deployment = _create(tenants, model, bundle, offline_pool)

    revision = deployment_update(
        user=tenants.owner, deployment=deployment, spec={"prompt_caching": True}
    )

    assert revision.number == 1
    assert deployment.revisions.count() == 1


def test_update_over_quota_is_refused_and_keeps_the_old_revision(
    tenants, model, bundle, offline_pool
):
    deployment = _create(tenants, model, bundle, offline_pool)

    with pytest.raises(ValidationError) as exc:
        deployment_update(user=tenants.owner, deployment=deployment, spec={"replicas": {"max": 9}})

    # Its own GPU is not counted as "in use" against it, and 9 is what it asks for in all.
    assert "0 are in use by other deployments: this one's 9 GPUs do not fit" in exc.value.message_dict["resources.gpus"][0]
    assert deployment.revisions.count() == 1
    assert tenants.project.gpu_used() == 1


def test_nim_tag_change_in_place_makes_a_revision_with_the_new_image(tenants, offline_pool):
    nim_pool = ComputePool.objects.create(organization=tenants.org, name="nim", kind=PoolKind.SANDBOX,
                                          api_url="http://127.0.0.1:9", engine_label="nim")  # fmt: skip
    nim_bundle = ProfileBundle.objects.create(organization=tenants.org, name="nim", engine="nim",
                                              image="nvcr.io/nim/nvidia/llm-nim:1.3.0")  # fmt: skip
    nim_model = CatalogModel.objects.create(
        organization=tenants.org, name="Llama 3.1 8B NIM", source="ngc",
        ngc_image="nvcr.io/nim/meta/llama-3.1-8b-instruct", ngc_tag="1.3.0", ngc_tags=["1.3.0", "1.4.0"],
    )  # fmt: skip
    from projects.services import integration_set

    integration_set(user=tenants.owner, project=tenants.project, kind="ngc", secret="nvapi-x")
    deployment = deployment_create(user=tenants.owner, project=tenants.project, model=nim_model, pool=nim_pool,
                                   name="llama", bundle=nim_bundle, spec={})  # fmt: skip
    assert (
        deployment.current_revision.spec["image"] == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.0"
    )
    assert deployment.current_revision.spec["served_model_name"] == "meta/llama-3.1-8b-instruct"

    revision = deployment_set_nim_tag(user=tenants.owner, deployment=deployment, tag="1.4.0")

    assert revision.number == 2
    assert revision.spec["image"] == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.4.0"
    assert revision.spec["nim_tag"] == "1.4.0"
    with pytest.raises(ValidationError) as exc:
        deployment_set_nim_tag(user=tenants.owner, deployment=deployment, tag="9.9.9")
    assert "known tags" in exc.value.message_dict["nim_tag"][0]


def test_pool_services_check_operator_labels_and_use(tenants, model, bundle, offline_pool, operator):
    with pytest.raises(PermissionDenied):
        pool_create(
            user=tenants.member,
            organization=tenants.org,
            name="p",
            kind="sandbox",
            engine_label="vllm",
        )
    with pytest.raises(PermissionDenied):  # organization admins too, unless the setting allows
        pool_create(user=tenants.owner, organization=tenants.org, name="p", kind="sandbox", engine_label="vllm")
    with pytest.raises(ValidationError) as exc:
        pool_create(
            user=operator,
            organization=tenants.org,
            name="p",
            kind="sandbox",
            engine_label="v LLM",
        )
    assert "engine_label" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        pool_create(
            user=operator,
            organization=tenants.org,
            name="offline",
            kind="sandbox",
            engine_label="vllm",
        )
    assert "already exists" in exc.value.message_dict["name"][0]
    _create(tenants, model, bundle, offline_pool)
    with pytest.raises(ValidationError):
        pool_delete(user=operator, pool=offline_pool)


def test_pool_test_connection_reports_nodes_and_gpus(tenants, cluster, operator):
    pool = pool_create(user=operator, organization=tenants.org, name="sandbox", kind="sandbox",
                       engine_label="vllm", api_url=cluster.url)  # fmt: skip

    result = pool_test_connection(user=operator, pool=pool)

    assert result["ok"] is True
    assert result["version"].startswith("v1.")
    assert len(result["nodes"]) == 2
    assert all(node["gpus"] == 4 and node["gpu_product"] == "NVIDIA-L4" for node in result["nodes"])
    pool.refresh_from_db()
    assert pool.reachable is True and pool.last_check["nodes"]


def test_pool_test_connection_says_why_it_failed(tenants, offline_pool, operator):
    result = pool_test_connection(user=operator, pool=offline_pool)

    assert result["ok"] is False
    assert "could not be reached" in result["error"]
    offline_pool.refresh_from_db()
    assert offline_pool.reachable is False


def test_endpoint_paths_are_checked(tenants):
    endpoint = endpoint_create(
        user=tenants.owner, project=tenants.project, name="chat", path="chat"
    )
    assert endpoint.path == "/chat"
    with pytest.raises(ValidationError) as exc:
        endpoint_create(user=tenants.owner, project=tenants.project, name="other", path="/chat")
    assert "already used" in exc.value.message_dict["path"][0]
    with pytest.raises(PermissionDenied):
        endpoint_create(user=tenants.viewer, project=tenants.project, name="x", path="/x")


def test_state_is_pending_while_the_pool_cannot_be_reached(tenants, model, bundle, offline_pool):
    deployment = _create(tenants, model, bundle, offline_pool)

    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.PENDING
    assert deployment.events.filter(reason="PushFailed", type="Warning").exists()


def test_without_a_bundle_the_projects_maas_rules_choose(tenants, model, bundle, offline_pool):
    from catalog.models import MaaSMapping

    with pytest.raises(ValidationError) as exc:
        deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=offline_pool, name="chat",
                          spec={})  # fmt: skip
    assert "no MaaS mappings" in exc.value.message_dict["bundle"][0]

    MaaSMapping.objects.create(
        project=tenants.project, position=1, source="huggingface", bundle=bundle
    )
    deployment = deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=offline_pool,
                                   name="chat", spec={})  # fmt: skip

    assert deployment.bundle == bundle


def test_demo_bootstrap_creates_the_sandbox_pool_and_an_endpoint_once(tenants, settings):
    import io

    from deployments.demo import bootstrap

    settings.SANDBOX_KUBE_URL = "http://127.0.0.1:18093"
    for _ in range(2):
        bootstrap(
            organization=tenants.org,
            project=tenants.project,
            admin=tenants.owner,
            stdout=io.StringIO(),
        )

    pool = ComputePool.objects.get(organization=tenants.org)
    assert (pool.name, pool.kind, pool.engine_label, pool.api_url) == (
        "sandbox",
        "sandbox",
        "vllm",
        "http://127.0.0.1:18093",
    )
    assert "simulated" in pool.description.lower() and "offline demo" in pool.description
    assert tenants.project.endpoints.count() == 1
    assert not ModelDeployment.objects.exists()


def test_environment_policies_narrow_what_a_deployment_may_ask_for(
    tenants, model, bundle, offline_pool
):
    from projects.models import Environment

    prod = Environment.objects.create(project=tenants.project, name="prod", slug="prod", max_replicas=2,
                                      max_gpus_per_replica=1)  # fmt: skip

    with pytest.raises(ValidationError) as exc:
        deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=offline_pool, name="chat",
                          bundle=bundle, environment=prod, spec={"replicas": {"max": 3}})  # fmt: skip
    assert "at most 2 replicas" in exc.value.message_dict["replicas.max"][0]

    other_pool = ComputePool.objects.create(organization=tenants.org, name="allowed", kind=PoolKind.SANDBOX,
                                            api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip
    prod.allowed_pools.add(other_pool)
    with pytest.raises(ValidationError) as exc:
        deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=offline_pool, name="chat",
                          bundle=bundle, environment=prod, spec={})  # fmt: skip
    assert "allows only the compute pools “allowed”; “offline” is not one of them" in exc.value.message_dict["pool"][0]


def test_every_deployment_change_is_audited_with_a_diff(tenants, offline_pool, model, bundle):
    from sharing.models import AuditEntry

    d = deployment_create(user=tenants.owner, project=tenants.project, model=model, pool=offline_pool,
                          name="audited", bundle=bundle, spec={})  # fmt: skip
    deployment_update(user=tenants.owner, deployment=d, spec={"replicas": {"min": 1, "max": 2}})
    deployment_deactivate(user=tenants.owner, deployment=d)
    deployment_activate(user=tenants.owner, deployment=d)
    deployment_rollback(user=tenants.owner, deployment=d, revision_number=1)
    deployment_delete(user=tenants.owner, deployment=d)
    entries = AuditEntry.objects.filter(object_type="deployment", object_id=str(d.pk)).order_by("id")
    assert [e.action for e in entries] == ["create", "update", "deactivate", "activate", "rollback", "delete"]
    update = entries[1]
    assert update.actor == tenants.owner
    assert any("replicas.max" in key for key in update.diff)


def test_twenty_parallel_scale_ups_never_overshoot_the_organization_quota(tenants, offline_pool, model, bundle):
    """10 deployments in each of two projects, each holding 1 GPU; the organization may hold 30.
    All 20 ask at once to grow to 2 replicas (+1 GPU each): exactly 10 fit, the rest are refused."""
    import threading

    from django.db import connection

    from projects.services import QuotaExceeded
    from tests.factories import ProjectFactory

    assert connection.vendor == "postgresql"
    tenants.org.gpu_quota = 30
    tenants.org.save()
    second = ProjectFactory(organization=tenants.org, name="Second", slug="second", gpu_quota=100)
    tenants.project.gpu_quota = 100
    tenants.project.save()
    deployments = [
        deployment_create(user=tenants.owner, project=project, model=model, pool=offline_pool,
                          name=f"d{i}", bundle=bundle,
                          spec={"served_model_name": f"m{i}", "replicas": {"min": 1, "max": 1}})
        for i, project in enumerate([tenants.project, second] * 10)
    ]  # fmt: skip
    assert tenants.org.gpu_used() == 20
    barrier = threading.Barrier(len(deployments))
    results: list = [None] * len(deployments)

    def scale(i: int, deployment) -> None:
        try:
            barrier.wait()
            results[i] = deployment_update(
                user=tenants.owner, deployment=deployment, spec={"replicas": {"min": 1, "max": 2}}
            )
        except Exception as exc:  # refusals are counted below
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=scale, args=(i, d)) for i, d in enumerate(deployments)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [r for r in results if isinstance(r, ValidationError)]
    assert len(refused) == 10, [type(r).__name__ + str(r) for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, QuotaExceeded) or "quota" in str(r).lower() for r in refused)
    assert tenants.org.gpu_used() == 30
    assert sum(d.revisions.count() for d in deployments) == 30  # 20 first revisions + 10 scale-ups


def test_deployment_actions_follow_the_one_permission_rule(tenants, offline_pool, model, bundle):
    """Services ask console.permissions, so a guardian grant or project membership counts
    exactly as it does on the sharing page — not the organization role alone."""
    from guardian.shortcuts import assign_perm

    from projects.models import ProjectMember, Role

    d = _create(tenants, model, bundle, offline_pool, name="perm")
    with pytest.raises(PermissionDenied, match="Viewers cannot change deployments"):
        deployment_update(user=tenants.viewer, deployment=d, spec={"context_length": 4096})
    assign_perm("deployments.change_modeldeployment", tenants.viewer, d)
    revision = deployment_update(user=tenants.viewer, deployment=d, spec={"context_length": 4096})
    assert revision.number == 2 and revision.created_by == tenants.viewer
    with pytest.raises(PermissionDenied, match="deactivate or activate"):
        deployment_deactivate(user=tenants.viewer, deployment=d)  # a change grant is not a deactivate grant
    ProjectMember.objects.create(project=tenants.project, user=tenants.viewer, role=Role.MEMBER)
    deployment_deactivate(user=tenants.viewer, deployment=d)
    d.refresh_from_db()
    assert d.state == "deactivated"
    with pytest.raises(PermissionDenied, match="another organization"):
        deployment_activate(user=tenants.outsider, deployment=d)
