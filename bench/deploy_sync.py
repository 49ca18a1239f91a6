"""Deployment push and status sync: list calls and seconds of one sync cycle, commit-to-applied latency.

Runs against a PostgreSQL database of its own (bench/seed.py: created, then dropped) and
in-process sandbox clusters on free ports:

1. status-sync cycles over N deployments (default 10,000) spread over P pools (default 5,
   one emulator each, objects stored as a healthy cluster shows them): the list calls the
   emulators counted, every other call, and the wall time of the first cycle (every row moves
   Deploying -> Running) and of steady cycles (nothing changes; the median of three is the
   `sync steady cycle s at N deployments` line);
2. commit-to-applied latency: `deployment_create` returns (its transaction committed, the push
   queued on commit and run in-process as a Celery worker would) until the Deployment and the
   Service are present in the emulator, over several deployments (p50 / max).

Usage: .venv/bin/python bench/deploy_sync.py [--deployments 10000] [--pools 5] [--latency-samples 20]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from seed import bench_database, seed_deployments  # noqa: E402  (bench/ is not a package)


def setup_django(data_dir: str, database_url: str) -> None:
    os.environ.pop("REDIS_URL", None)  # embedded Celery transport: no broker outside this process
    os.environ["MODELDECK_DATA_DIR"] = data_dir
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from console.celery import app

    app.conf.task_always_eager = True  # the push runs on commit, in this process


def fixtures():
    from django.contrib.auth import get_user_model

    from catalog.models import CatalogModel, ProfileBundle
    from projects.models import Membership, Organization, Role
    from projects.services import project_create

    user = get_user_model().objects.create(username="bench")
    org = Organization.objects.create(name="Bench", slug="bench", gpu_quota=100_000)
    Membership.objects.create(user=user, organization=org, role=Role.ADMIN)
    project = project_create(
        user=None, organization=org, name="Bench", slug="bench", gpu_quota=100_000
    )
    bundle = ProfileBundle.objects.create(organization=org, name="vllm-bench", engine="vllm",
                                          image="public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5")  # fmt: skip
    model = CatalogModel.objects.create(organization=org, name="qwen", source="huggingface",
                                        repo_id="Qwen/Qwen2.5-0.5B-Instruct")  # fmt: skip
    return user, org, project, bundle, model


def bench_sync(project, bundle, model, *, deployments: int, pools: int) -> None:
    from django.conf import settings

    from deployments.models import ComputePool, DeploymentState, ModelDeployment, PoolKind
    from deployments.renderers import render, render_service
    from deployments.spec import normalize_spec, render_spec_for
    from deployments.tasks import sync_status
    from sandbox.kubeapi import KubeEmulator

    emulators = [KubeEmulator() for _ in range(pools)]
    for emulator in emulators:
        emulator.start()
        # Sandbox pools connect only to sandboxes ModelDeck started: this run started these.
        settings.SANDBOX_KUBE_URLS.append(emulator.url)
    try:
        pool_rows = [
            ComputePool.objects.create(
                organization=project.organization,
                name=f"bench-{i}",
                kind=PoolKind.SANDBOX,
                api_url=e.url,
                engine_label="vllm",
            )  # fmt: skip
            for i, e in enumerate(emulators)
        ]
        spec = normalize_spec(
            {"resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"}}, bundle=bundle, model=model
        )
        seed_deployments(project=project, model=model, bundle=bundle, pools=pool_rows,
                                count=deployments, spec=spec, states=lambda i: DeploymentState.DEPLOYING)  # fmt: skip
        by_pool = dict(zip([p.pk for p in pool_rows], emulators, strict=True))
        for row in ModelDeployment.objects.filter(pool__in=pool_rows).select_related(
            "project__organization", "model", "bundle", "pool", "current_revision"
        ):
            emulator = by_pool[row.pool_id]
            rs = render_spec_for(row, row.current_revision)
            (dep,) = [o for o in render(rs) if o["kind"] == "Deployment"]
            dep["status"] = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
            emulator.put_object(dep)
            emulator.put_object(render_service(rs))
            template = dep["spec"]["template"]
            emulator.put_object({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{dep['metadata']['name']}-x", "namespace": rs.namespace,
                             "labels": template["metadata"]["labels"]},
                "spec": template["spec"],
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            })  # fmt: skip
        for emulator in emulators:
            emulator.reset_counts()
        started = time.perf_counter()
        totals = sync_status()
        first = time.perf_counter() - started
        list_calls = sum(e.count(verb="list") for e in emulators)
        all_calls = sum(e.count() for e in emulators)
        running = ModelDeployment.objects.filter(
            pool__in=pool_rows, state=DeploymentState.RUNNING
        ).count()
        sync_status()  # settles: nothing left to change
        for emulator in emulators:
            emulator.reset_counts()
        # The five emulated clusters keep their 10,000 deployments' objects in this process, where
        # a real cluster keeps them in its API server: every full garbage collection walked them
        # (0.65-0.69 s each, in two of the three steady cycles). Out of the collector's sight, as
        # a worker's start-up objects are (console.celery: gc.freeze in each pool process).
        gc.collect()
        gc.freeze()
        steady_runs = []
        for _ in range(3):
            started = time.perf_counter()
            sync_status()
            steady_runs.append(time.perf_counter() - started)
        steady = statistics.median(steady_runs)
        steady_calls = sum(e.count() for e in emulators) // 3
        steady_lists = sum(e.count(verb="list") for e in emulators) // 3
        print(f"status sync, {deployments} deployments on {pools} pools:")
        print(f"  first cycle (all move Deploying -> Running): {list_calls} list calls, {all_calls} calls in all, "
              f"{first:.3f} s, {running} Running, {totals['changed']} state changes written")  # fmt: skip
        print(f"  steady cycle (nothing changes): {steady_lists} list calls, {steady_calls} calls in all, "
              f"{', '.join(f'{t:.3f}' for t in steady_runs)} s")  # fmt: skip
        print(f"sync steady cycle s at {deployments} deployments: {steady:.3f}")
    finally:
        for emulator in emulators:
            emulator.stop()


def bench_latency(user, project, bundle, model, *, samples: int) -> None:
    from django.conf import settings

    from deployments.models import ComputePool, PoolKind
    from deployments.services import deployment_create
    from sandbox.kubelet import SandboxCluster

    cluster = SandboxCluster(ready_delay=0.5, tick=0.05)
    cluster.start()
    settings.SANDBOX_KUBE_URLS.append(cluster.url)
    try:
        pool = ComputePool.objects.create(organization=project.organization, name="latency", kind=PoolKind.SANDBOX,
                                          api_url=cluster.url, engine_label="vllm")  # fmt: skip
        emulator = cluster.emulator
        latencies = []
        for i in range(samples):
            name = f"lat{i}"
            started = time.perf_counter()
            deployment_create(user=user, project=project, model=model, pool=pool, name=name, bundle=bundle,
                              spec={"served_model_name": name, "resources": {"gpus": 0, "cpu": "100m", "memory": "128Mi"}})  # fmt: skip
            while not (
                emulator.get_object("Deployment", project.namespace(), f"{name}-r1")
                and emulator.get_object("Service", project.namespace(), name)
            ):
                time.sleep(0.001)
            latencies.append((time.perf_counter() - started) * 1000)
        print(
            f"commit-to-applied latency over {samples} deployments (create + push in-process, emulator on loopback):"
        )
        print(f"  p50 {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms")
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=5)
    parser.add_argument("--latency-samples", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-") as data_dir, bench_database("sync") as url:
        setup_django(data_dir, url)
        user, org, project, bundle, model = fixtures()
        bench_sync(project, bundle, model, deployments=args.deployments, pools=args.pools)
        bench_latency(user, project, bundle, model, samples=args.latency_samples)


if __name__ == "__main__":
    main()
