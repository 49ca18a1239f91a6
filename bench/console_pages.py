"""Console list pages at scale: p95 latency and SQL queries per page at 10,000 deployments.

Creates its own PostgreSQL database (bench/seed.py; dropped at the end), seeds 10,000
deployments on 5 pools, 500 catalog models, 50 projects, 20 API keys and 100,000 usage records
with bulk_create, folds the usage records into the hourly rollups (gateway/rollup.py), then requests every list page in-process with Django's test client (no
network, no server: the figure is the view, its queries and its template) and prints, per page,
p50/p95 milliseconds, queries and response size; then the streamed usage CSV. Ends with:

    console p95 ms at 10000 deployments: <worst page p95> (<page name>)
    console queries at 10000 deployments: <max over pages>

Usage: .venv/bin/python bench/console_pages.py [--deployments 10000] [--usage 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import gc
import html
import os
import re
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def setup_django(database_url: str, data_dir: str) -> None:
    os.environ.pop("REDIS_URL", None)  # embedded mode: no broker or cache outside this process
    os.environ["DATABASE_URL"] = database_url
    os.environ["MODELDECK_DATA_DIR"] = data_dir
    os.environ["DEBUG"] = "false"  # as in production: cached templates, no SQL log
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(deployments: int, usage: int):
    from django.contrib.auth import get_user_model
    from seed import seed_deployments, seed_usage

    from catalog.models import CatalogModel, ProfileBundle
    from deployments.models import ComputePool, DeploymentState, PoolKind
    from deployments.spec import normalize_spec
    from projects.keys import api_key_create
    from projects.models import Membership, Organization, Project, Role
    from projects.services import project_namespace_choose

    user = get_user_model().objects.create(username="bench", is_staff=True)
    org = Organization.objects.create(name="Bench", slug="bench", gpu_quota=100_000)
    Membership.objects.create(user=user, organization=org, role=Role.ADMIN)
    projects = Project.objects.bulk_create(
        Project(organization=org, name=f"Project {i}", slug=f"p{i}", gpu_quota=1000,
                kube_namespace=project_namespace_choose(organization=org, slug=f"p{i}"))
        for i in range(50)
    )  # fmt: skip
    bundle = ProfileBundle.objects.create(organization=org, name="vllm-bench", engine="vllm",
                                          image="public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5")  # fmt: skip
    models = CatalogModel.objects.bulk_create(
        CatalogModel(organization=org, name=f"model-{i}", source="huggingface",
                     repo_id=f"org/model-{i}", task="text-generation" if i % 4 else "feature-extraction")
        for i in range(500)
    )  # fmt: skip
    pools = [
        ComputePool.objects.create(organization=org, name=f"pool-{i}", kind=PoolKind.SANDBOX,
                                   api_url="http://127.0.0.1:9", engine_label="vllm")  # fmt: skip
        for i in range(5)
    ]
    spec = normalize_spec({"resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"}}, bundle=bundle, model=models[0])

    def state(i: int) -> str:
        return DeploymentState.DEPLOYING if i % 50 == 0 else DeploymentState.FAILED if i % 33 == 0 else DeploymentState.RUNNING

    rows = []
    per_project = max(1, deployments // len(projects))
    for n, project in enumerate(projects):
        count = per_project if n < len(projects) - 1 else deployments - per_project * (len(projects) - 1)
        rows += seed_deployments(project=project, model=models[n % len(models)], bundle=bundle, pools=pools,
                                 count=count, spec=spec, states=state)  # fmt: skip
    keys = [api_key_create(user=user, organization=org, name=f"key {i}")[0] for i in range(20)]
    seed_usage(organization=org, user=user, deployments=rows, keys=keys, count=usage, within=timedelta(hours=20))
    return user, rows


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    low = int(k)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (k - low)


def measure(client, name: str, url: str, repeat: int, **headers) -> dict:
    from django.db import connection

    executed = []

    def count(execute, sql, params, many, context):
        executed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = client.get(url, **headers)
    assert response.status_code in (200, 204, 286), (name, url, response.status_code)
    size = len(response.content)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(url, **headers)
        times.append((time.perf_counter() - started) * 1000)
    return {"name": name, "url": url, "p50": percentile(times, 0.5), "p95": percentile(times, 0.95),
            "queries": len(executed), "bytes": size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--usage", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    from seed import bench_database

    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-") as data_dir, bench_database("console") as url:
        setup_django(url, data_dir)
        started = time.perf_counter()
        user, rows = seed(args.deployments, args.usage)
        print(f"seeded {args.deployments} deployments and {args.usage} usage records in {time.perf_counter() - started:.1f} s")
        from gateway.rollup import fold

        started = time.perf_counter()
        folded = fold(max_batches=1000)  # what the gateway.fold_usage beat task does every 10 s
        print(f"usage rollup: folded {folded} records in {time.perf_counter() - started:.1f} s")
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # as autovacuum would soon after a bulk load
        from django.test import Client

        client = Client()
        client.force_login(user)
        # The seed's 10,000 rows and 100,000 records stay alive in this process, which a console
        # process never holds: each full garbage collection then walked them all (150-250 ms,
        # landing in one sample of 20 and making a p95). Out of the collector's sight, as a
        # server's start-up objects would be after gc.freeze().
        del rows
        gc.collect()
        gc.freeze()
        # The list's status poll as the page asks for it: every row of the first page with its
        # version; then the same rows as if every one had changed since (all rows sent back).
        page = client.get("/deployments/").content.decode()
        poll = html.unescape(re.search(r'hx-get="([^"]+)" hx-trigger="[^"]+" hx-swap="none" id="status-poll"', page).group(1))
        stale = re.sub(r"\.[0-9a-f]+", ".0", poll)
        pages = [
            ("deployments list", "/deployments/", {}),
            ("deployments status poll", poll, {"HTTP_HX_REQUEST": "true"}),
            ("deployments poll, all changed", stale, {"HTTP_HX_REQUEST": "true"}),
            ("deployments stats, on change", "/deployments/?fragment=stats", {"HTTP_HX_REQUEST": "true"}),
            ("catalog", "/catalog/", {}),
            ("developer hub models", "/hub/models/", {}),
            ("developer hub keys", "/hub/keys/", {}),
            ("key form deployment search", "/hub/keys/deployments/?q=d001", {"HTTP_HX_REQUEST": "true"}),
            ("pools", "/pools/", {}),
            ("projects", "/projects/", {}),
            ("usage (my keys)", "/hub/usage/", {}),
            ("usage (organization)", "/hub/usage/organization/", {}),
            ("budgets", "/hub/budgets/", {}),
            ("budgets, sorted by spent", "/hub/budgets/?key_sort=-spent&member_sort=-spent", {}),
            ("audit log", "/audit/", {}),
            ("REST deployments list", "/api/v1/deployments/", {}),
        ]  # fmt: skip
        results = []
        print(f"{'page':<28} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8} {'KB':>8}")
        for name, page_url, headers in pages:
            r = measure(client, name, page_url, args.repeat, **headers)
            results.append(r)
            print(f"{name:<28} {r['p50']:8.1f} {r['p95']:8.1f} {r['queries']:8d} {r['bytes'] / 1024:8.1f}")
        started = time.perf_counter()
        response = client.get("/hub/usage/organization/?range=24h&format=csv")
        first = None
        size = 0
        for chunk in response.streaming_content:
            if first is None:
                first = (time.perf_counter() - started) * 1000
            size += len(chunk)
        print(f"usage CSV, 24 hours ({args.usage} records): {size / 1e6:.1f} MB streamed in "
              f"{time.perf_counter() - started:.2f} s, first byte after {first:.0f} ms")  # fmt: skip
        worst = max(results, key=lambda r: r["p95"])
        print(f"console p95 ms at {args.deployments} deployments: {worst['p95']:.1f} ({worst['name']})")
        print(f"console queries at {args.deployments} deployments: {max(r['queries'] for r in results)}")


if __name__ == "__main__":
    main()
