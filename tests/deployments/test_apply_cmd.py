"""`manage.py apply -f` / `delete -f` against the demo data: declarative, idempotent, with a dry-run diff."""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from deployments.models import ComputePool, DeploymentState, Endpoint, ModelDeployment
from tests.deployments.conftest import state_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def demo(settings, cluster):
    # The built-in Profile Bundles come from a data migration, which transactional tests' flushes wipe.
    from django.apps import apps

    importlib.import_module("catalog.migrations.0004_builtin_profile_bundles").seed(apps, None)
    settings.SANDBOX_KUBE_URL = cluster.url
    call_command("bootstrap_demo", stdout=io.StringIO())
    # The example names the default sandbox URL; point the demo pool at this test's cluster.
    ComputePool.objects.filter(name="sandbox").update(api_url=cluster.url)


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    try:
        call_command(command, *args, stdout=out)
    except CommandError as exc:
        raise AssertionError(f"{exc}:\n{out.getvalue()}") from exc
    return out.getvalue()


def _example(
    tmp_path: Path, name: str, cluster_url: str, replace: tuple[str, str] | None = None
) -> str:
    text = (EXAMPLES / name).read_text().replace("http://127.0.0.1:8093", cluster_url)
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_creates_then_reports_unchanged(demo, cluster, emulator, tmp_path):
    pool_file = _example(tmp_path, "sandbox-pool.yaml", cluster.url)
    qwen_file = _example(tmp_path, "qwen-deployment.yaml", cluster.url)

    first = run("apply", "-f", pool_file, "-f", qwen_file)

    assert "computepool/sandbox unchanged" in first
    assert "model/qwen2.5-0.5b-instruct unchanged" in first
    assert "endpoint/qwen-chat created" in first
    assert "modeldeployment/qwen-chat created" in first
    deployment = ModelDeployment.objects.get(name="qwen-chat")
    assert deployment.endpoint == Endpoint.objects.get(name="qwen-chat")
    assert emulator.get_object("Deployment", "demo-demo", "qwen-chat-r1") is not None
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    second = run("apply", "-f", pool_file, "-f", qwen_file)

    assert second.count("unchanged") == 4, second
    assert "created" not in second and "configured" not in second
    assert deployment.revisions.count() == 1


def test_dry_run_prints_the_diff_and_changes_nothing(demo, cluster, tmp_path):
    run("apply", "-f", _example(tmp_path, "qwen-deployment.yaml", cluster.url))
    changed = _example(
        tmp_path,
        "qwen-deployment.yaml",
        cluster.url,
        ("replicas: {min: 1, max: 1}", "replicas: {min: 1, max: 2}"),
    )

    out = run("apply", "-f", changed, "--dry-run")

    assert "modeldeployment/qwen-chat would be configured:" in out
    assert "  replicas.max: 1 → 2" in out
    deployment = ModelDeployment.objects.get(name="qwen-chat")
    assert deployment.revisions.count() == 1

    applied = run("apply", "-f", changed)

    assert "modeldeployment/qwen-chat configured:" in applied
    assert deployment.revisions.count() == 2
    assert deployment.revisions.get(number=2).spec["replicas"] == {"min": 1, "max": 2}


def test_apply_refuses_changing_the_model_in_place(demo, cluster, tmp_path):
    run("apply", "-f", _example(tmp_path, "qwen-deployment.yaml", cluster.url))
    from catalog.models import CatalogModel

    CatalogModel.objects.create(organization=ModelDeployment.objects.get().project.organization, name="other",
                                source="huggingface", repo_id="org/other")  # fmt: skip
    changed = _example(tmp_path, "qwen-deployment.yaml", cluster.url,
                       ("model: qwen2.5-0.5b-instruct   # catalog", "model: other   # catalog"))  # fmt: skip
    out = io.StringIO()

    with pytest.raises(CommandError):
        call_command("apply", "-f", changed, stdout=out)

    assert "the model can't change in place" in out.getvalue()
    assert "create a new deployment" in out.getvalue()


def test_spec_errors_name_the_field(demo, cluster, tmp_path):
    bad = _example(tmp_path, "qwen-deployment.yaml", cluster.url, ("gpus: 1}", "gpus: 40}"))
    out = io.StringIO()

    with pytest.raises(CommandError):
        call_command("apply", "-f", bad, stdout=out)

    assert "error: modeldeployment/qwen-chat: resources.gpus:" in out.getvalue()
    assert not ModelDeployment.objects.filter(name="qwen-chat").exists()


def test_delete_removes_what_the_file_names(demo, cluster, emulator, tmp_path):
    qwen_file = _example(tmp_path, "qwen-deployment.yaml", cluster.url)
    run("apply", "-f", qwen_file)
    deployment = ModelDeployment.objects.get(name="qwen-chat")

    out = run("delete", "-f", qwen_file)

    assert "modeldeployment/qwen-chat deleted" in out
    wait_for(lambda: not ModelDeployment.objects.filter(pk=deployment.pk).exists())
    assert emulator.get_object("Service", "demo-demo", "qwen-chat") is None


def test_custom_bundle_example_applies_and_versions(demo, cluster, tmp_path):
    bundle_file = _example(tmp_path, "custom-bundle.yaml", cluster.url)
    assert "profilebundle/vllm-small created" in run("apply", "-f", bundle_file)
    assert "profilebundle/vllm-small unchanged" in run("apply", "-f", bundle_file)
    edited = _example(tmp_path, "custom-bundle.yaml", cluster.url, ("default: 0.8", "default: 0.7"))
    assert "profilebundle/vllm-small configured" in run("apply", "-f", edited)
    from catalog.models import ProfileBundle

    assert ProfileBundle.objects.get(name="vllm-small", version=2).variables[0]["default"] == 0.7


AUTOSCALED = (
    "replicas: {min: 0, max: 3}\n"
    "  autoscaling:\n"
    "    metric: concurrency\n"
    "    target: 4\n"
    "    scale_down_delay_seconds: 120\n"
    "    scale_to_zero_after_seconds: 600\n"
    "    cold_start_hold_seconds: 300"
)


def test_apply_accepts_the_autoscaling_section_and_names_a_bad_field(demo, cluster, tmp_path):
    bad = _example(tmp_path, "qwen-deployment.yaml", cluster.url,
                   ("replicas: {min: 1, max: 1}", AUTOSCALED.replace("target: 4", "target: 0")))  # fmt: skip
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("apply", "-f", bad, stdout=out)
    assert "error: modeldeployment/qwen-chat: autoscaling.target:" in out.getvalue()

    good = _example(tmp_path, "qwen-deployment.yaml", cluster.url, ("replicas: {min: 1, max: 1}", AUTOSCALED))
    assert "modeldeployment/qwen-chat created" in run("apply", "-f", good)

    deployment = ModelDeployment.objects.get(name="qwen-chat")
    assert deployment.spec()["autoscaling"] == {
        "enabled": True, "metric": "concurrency", "target": 4, "scale_down_delay_seconds": 120,
        "scale_to_zero_after_seconds": 600, "cold_start_hold_seconds": 300,
    }  # fmt: skip
    assert deployment.gpus_held() == 1  # the start replica, not max
    assert run("apply", "-f", good).count("unchanged") == 3


def test_apply_rolls_out_with_the_update_strategy_the_file_names(demo, cluster, tmp_path):
    qwen = _example(tmp_path, "qwen-deployment.yaml", cluster.url)
    run("apply", "-f", qwen)
    deployment = ModelDeployment.objects.get(name="qwen-chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    deployment.project.gpu_quota = deployment.gpus_held()  # no room for a blue-green surge
    deployment.project.save(update_fields=["gpu_quota"])
    anchor = "  replicas: {min: 1, max: 1}\n"
    text = Path(qwen).read_text()
    assert anchor in text

    def variant(name: str, lines: str) -> str:
        path = tmp_path / name
        path.write_text(text.replace(anchor, anchor + lines, 1))
        return str(path)

    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("apply", "-f", variant("bad.yaml", "  update_strategy: sideways\n"), stdout=out)
    assert "spec.update_strategy is one of blue_green, recreate" in out.getvalue()

    out = io.StringIO()
    with pytest.raises(CommandError):  # blue-green (the default) would hold both revisions' GPUs
        call_command("apply", "-f", variant("surge.yaml", "  env: {LOG_LEVEL: debug}\n"), stdout=out)
    assert "recreate" in out.getvalue()
    assert deployment.revisions.count() == 1

    good = variant("good.yaml", "  env: {LOG_LEVEL: debug}\n  update_strategy: recreate\n")
    assert "modeldeployment/qwen-chat configured" in run("apply", "-f", good)
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 2
    assert "(recreate)" in deployment.current_revision.reason
    # The strategy is how a change rolls out, not part of the spec: the same file is unchanged.
    assert "modeldeployment/qwen-chat unchanged" in run("apply", "-f", good)
