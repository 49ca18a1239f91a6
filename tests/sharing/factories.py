"""Rows the governance tests need from other apps.

A deployment here is made with the ORM (the tests need several revisions and a running state
without a cluster), but never in a state no service could produce: it holds its GPUs in the
project's quota through projects.services.quota_reserve, and reaches Running through
deployments.services.state_claim, as the status sync does.
"""

from __future__ import annotations

import itertools

from catalog.models import CatalogModel, ProfileBundle
from deployments.models import ComputePool, DeploymentState, ModelDeployment, Revision
from deployments.services import state_claim
from deployments.spec import gpu_hold
from projects.models import Environment, Organization, Project
from projects.services import quota_reserve

_seq = itertools.count(1)


def spec(
    *, replicas: int = 1, gpus: int = 1, gpu_type: str = "", served: str | None = None
) -> dict:
    return {
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.6.3",
        "served_model_name": served or f"model-{next(_seq)}",
        "replicas": {"min": 1, "max": replicas},
        "context_length": 8192,
        "prompt_caching": True,
        "resources": {"cpu": "4", "memory": "16Gi", "gpus": gpus, "gpu_type": gpu_type},
        "env": {},
        "labels": {},
        "annotations": {},
        "tolerations": [],
        "node_selector": {},
        "affinity": None,
        "extra_args": [],
        "model_cache": None,
        "nim_profile": "",
        "nim_tag": "",
        "autoscaling": {"enabled": False, "metric": "concurrency", "target": 8},
        "rate_limits": {k: {"rpm": None, "tpm": None} for k in ("organization", "user", "api_key")},
        "pricing": {"currency": "USD", "input_per_million": "0.00", "output_per_million": "0.00"},
    }


def pool(
    organization: Organization, *, name: str | None = None, region: str = "", engine: str = "vllm"
) -> ComputePool:
    return ComputePool.objects.create(
        organization=organization,
        name=name or f"pool-{next(_seq)}",
        kind="sandbox",
        engine_label=engine,
        region=region,
        api_url="http://127.0.0.1:8093",
    )


def catalog_model(organization: Organization, *, name: str | None = None) -> CatalogModel:
    return CatalogModel.objects.create(
        organization=organization,
        name=name or f"model-{next(_seq)}",
        source="huggingface",
        repo_id="org/model",
        revision="main",
    )


def bundle(organization: Organization | None = None) -> ProfileBundle:
    return ProfileBundle.objects.create(
        organization=organization,
        name=f"bundle-{next(_seq)}",
        engine="vllm",
        image="vllm/vllm-openai:v0.6.3",
    )


def deployment(
    project: Project,
    *,
    name: str | None = None,
    environment: Environment | None = None,
    pool_: ComputePool | None = None,
    model: CatalogModel | None = None,
    revisions: list[dict] | None = None,
) -> ModelDeployment:
    org = project.organization
    dep = ModelDeployment.objects.create(
        project=project,
        model=model or catalog_model(org),
        bundle=bundle(org),
        pool=pool_ or pool(org),
        environment=environment,
        name=name or f"dep-{next(_seq)}",
    )
    current = None
    for number, body in enumerate(revisions or [spec()], start=1):
        current = Revision.objects.create(deployment=dep, number=number, spec=body)
    dep.current_revision = current
    dep.serving_revision = current
    dep.save(update_fields=["current_revision", "serving_revision"])
    quota_reserve(project=project, holder=dep.gpu_holder(), gpus=gpu_hold(current.spec))
    state_claim(dep, expect=DeploymentState.PENDING, state=DeploymentState.RUNNING)
    return dep


def environment(
    project: Project, *, name: str = "Production", slug: str | None = None, pools=(), **fields
) -> Environment:
    env = Environment.objects.create(
        project=project, name=name, slug=slug or name.lower(), **fields
    )
    if pools:
        env.allowed_pools.set(pools)
    return env
