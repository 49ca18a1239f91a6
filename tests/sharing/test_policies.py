"""Environment policies narrowed by deployment policies; violations name the rule; promotion is checked."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from sharing import services
from sharing.policies import check_spec, effective_policy
from tests.sharing import factories as f


@pytest.mark.django_db
def test_deployment_policies_only_narrow_the_environment(tenants):
    a100 = f.pool(tenants.org, name="a100-pool")
    h100 = f.pool(tenants.org, name="h100-pool")
    env = f.environment(
        tenants.project,
        name="Staging",
        pools=[a100, h100],
        allowed_gpu_types=["A100", "H100"],
        max_replicas=4,
        max_gpus_per_replica=2,
    )
    policy = effective_policy(
        env,
        {
            "allowed_pools": [a100.pk],
            "allowed_gpu_types": ["H100", "L4"],
            "max_replicas": 8,
            "max_gpus_per_replica": 1,
        },
    )
    plain = policy.as_dict()
    assert plain["allowed_pools"] == [a100.pk]  # intersect
    assert plain["allowed_gpu_types"] == ["H100"]  # L4 is not added: never widen
    assert plain["max_replicas"] == 4  # 8 > 4: the environment's stays
    assert plain["max_gpus_per_replica"] == 1  # the smaller wins
    assert policy.max_replicas.source == "Environment “Staging”"
    assert policy.max_gpus_per_replica.source == "The deployment's policy max_gpus_per_replica"


@pytest.mark.django_db
def test_empty_means_any_on_either_side(tenants):
    env = f.environment(tenants.project, name="Dev")
    assert effective_policy(env, {}).as_dict() == {
        "allowed_pools": None,
        "allowed_gpu_types": None,
        "max_replicas": None,
        "max_gpus_per_replica": None,
        "allowed_pool_labels": {},
    }
    assert effective_policy(env, {"allowed_gpu_types": ["L4"]}).as_dict()["allowed_gpu_types"] == [
        "L4"
    ]
    assert effective_policy(None, {"max_replicas": 3}).as_dict()["max_replicas"] == 3


@pytest.mark.django_db
def test_check_spec_names_the_environment_and_the_numbers(tenants):
    pool = f.pool(tenants.org)
    env = f.environment(tenants.project, name="production", max_replicas=2)
    violations = check_spec(
        environment=env, deployment_policies={}, pool=pool, spec=f.spec(replicas=4)
    )
    assert [v.message for v in violations] == [
        "Environment “production” allows at most 2 replicas; the spec asks for 4."
    ]
    assert violations[0].policy == "max_replicas"
    assert (
        check_spec(environment=env, deployment_policies={}, pool=pool, spec=f.spec(replicas=2))
        == []
    )


@pytest.mark.django_db
def test_check_spec_reports_every_broken_rule(tenants):
    ok_pool = f.pool(tenants.org, name="prod-east", region="us-east-1")
    other = f.pool(tenants.org, name="lab", region="eu-west-1")
    env = f.environment(
        tenants.project,
        name="Production",
        pools=[ok_pool],
        allowed_gpu_types=["H100"],
        max_gpus_per_replica=1,
        allowed_pool_labels={"region": ["us-east-1"]},
    )
    violations = check_spec(
        environment=env,
        deployment_policies={"max_replicas": 1},
        pool=other,
        spec=f.spec(replicas=3, gpus=2, gpu_type="A100"),
    )
    by_policy = {v.policy: v.message for v in violations}
    assert (
        by_policy["max_replicas"]
        == "The deployment's policy max_replicas allows at most 1 replica; the spec asks for 3."
    )
    assert by_policy["max_gpus_per_replica"] == (
        "Environment “Production” allows at most 1 GPU per replica; the spec asks for 2."
    )
    assert (
        by_policy["allowed_gpu_types"]
        == "Environment “Production” allows only GPU types H100; the spec asks for “A100”."
    )
    assert by_policy["allowed_pools"] == (
        "Environment “Production” allows only the compute pools “prod-east”; “lab” is not one of them."
    )
    assert by_policy["allowed_pool_labels"] == (
        "Environment “Production” allows only pools with region us-east-1; “lab” has region “eu-west-1”."
    )


@pytest.mark.django_db
def test_gpu_type_policy_requires_naming_an_allowed_type(tenants):
    env = f.environment(tenants.project, name="Production", allowed_gpu_types=["H100"])
    [violation] = check_spec(
        environment=env, deployment_policies=None, pool=None, spec=f.spec(gpus=1)
    )
    assert "the spec asks for no particular GPU type" in violation.message
    # A CPU-only spec holds no GPU, so the GPU type rule doesn't apply.
    assert (
        check_spec(environment=env, deployment_policies=None, pool=None, spec=f.spec(gpus=0)) == []
    )


# ---------------------------------------------------------------- promotion


@pytest.mark.django_db
def test_promotion_into_a_stricter_environment_is_refused_with_the_rule_named(tenants):
    staging = f.environment(tenants.project, name="Staging", max_replicas=8)
    production = f.environment(tenants.project, name="Production", slug="prod", max_replicas=2)
    dep = f.deployment(
        tenants.project,
        name="llama",
        environment=staging,
        revisions=[f.spec(replicas=1), f.spec(replicas=4)],
    )
    with pytest.raises(ValidationError) as exc:
        services.promotion_plan(
            user=tenants.member, deployment=dep, revision_number=2, target_environment=production
        )
    assert exc.value.message_dict["target_environment"] == [
        "Environment “Production” allows at most 2 replicas; the spec asks for 4."
    ]


@pytest.mark.django_db
def test_promotion_plan_creates_a_deployment_in_the_target(tenants):
    staging = f.environment(tenants.project, name="Staging")
    production = f.environment(tenants.project, name="Production", slug="prod", max_replicas=2)
    dep = f.deployment(
        tenants.project,
        name="llama",
        environment=staging,
        revisions=[f.spec(replicas=1, served="llama-chat"), f.spec(replicas=4)],
    )
    plan = services.promotion_plan(
        user=tenants.owner, deployment=dep, revision_number=1, target_environment=production
    )
    assert plan.call == "deployment_create"
    assert plan.kwargs["environment"] == production and plan.kwargs["name"] == "llama-prod"
    assert plan.kwargs["spec"]["served_model_name"] == "llama-chat-prod"
    assert plan.kwargs["pool"] == dep.pool and plan.kwargs["bundle"] == dep.bundle
    assert (
        dep.revisions.get(number=1).spec["served_model_name"] == "llama-chat"
    )  # the revision is untouched
    assert "from Staging to Production" in plan.describe()


@pytest.mark.django_db
def test_promotion_plan_updates_the_targets_existing_deployment(tenants):
    staging = f.environment(tenants.project, name="Staging")
    production = f.environment(tenants.project, name="Production", slug="prod")
    model = f.catalog_model(tenants.org)
    dep = f.deployment(
        tenants.project,
        name="llama",
        environment=staging,
        model=model,
        revisions=[f.spec(replicas=1), f.spec(replicas=2, served="llama-v2")],
    )
    prod_dep = f.deployment(tenants.project, name="llama-prod", environment=production, model=model)
    plan = services.promotion_plan(
        user=tenants.owner, deployment=dep, revision_number=2, target_environment=production
    )
    assert plan.call == "deployment_update"
    assert plan.kwargs["deployment"] == prod_dep
    assert plan.kwargs["spec"]["replicas"]["max"] == 2
    assert plan.kwargs["reason"] == "Promoted revision 2 of “llama” from Staging"


@pytest.mark.django_db
def test_promotion_refusals(tenants):
    staging = f.environment(tenants.project, name="Staging")
    dep = f.deployment(tenants.project, environment=staging)
    other_env = f.environment(tenants.other_project, name="Production")
    with pytest.raises(ValidationError, match="same project"):
        services.promotion_plan(
            user=tenants.owner, deployment=dep, revision_number=1, target_environment=other_env
        )
    with pytest.raises(ValidationError, match="already runs in"):
        services.promotion_plan(
            user=tenants.owner, deployment=dep, revision_number=1, target_environment=staging
        )
    prod = f.environment(tenants.project, name="Production", slug="prod")
    with pytest.raises(ValidationError, match="has no revision 7"):
        services.promotion_plan(
            user=tenants.owner, deployment=dep, revision_number=7, target_environment=prod
        )
    with pytest.raises(PermissionDenied, match="Viewers cannot change"):
        services.promotion_plan(
            user=tenants.viewer, deployment=dep, revision_number=1, target_environment=prod
        )


@pytest.mark.django_db
def test_enforce_puts_each_refusal_on_its_spec_field(tenants):
    from sharing.policies import enforce

    pool = f.pool(tenants.org, name="lab")
    env = f.environment(
        tenants.project,
        name="Production",
        max_replicas=1,
        max_gpus_per_replica=1,
        pools=[f.pool(tenants.org, name="prod")],
    )
    with pytest.raises(ValidationError) as exc:
        enforce(
            environment=env, deployment_policies=None, pool=pool, spec=f.spec(replicas=2, gpus=4)
        )
    errors = exc.value.message_dict
    assert set(errors) == {"replicas.max", "resources.gpus", "pool"}
    assert errors["replicas.max"] == [
        "Environment “Production” allows at most 1 replica; the spec asks for 2."
    ]
    enforce(environment=env, deployment_policies=None, pool=env.allowed_pools.get(), spec=f.spec())
