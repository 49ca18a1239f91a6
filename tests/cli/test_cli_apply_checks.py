"""`modeldeck apply` from the client venv: a dry run of a new deployment reports the refusals the
real apply would, and a file the server can't take is named with the reason in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.models import Endpoint, ModelDeployment
from tests.cli.conftest import run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.django_db(transaction=True)
def test_dry_run_and_refused_files_from_the_cli(client_venv, demo, cluster, live_server, tmp_path, login_limits_reset):
    home = tmp_path / "home"
    home.mkdir()
    login = run(client_venv, home, "login", "--url", live_server.url, "--username", "admin",
                "--password", "cli-Test-password-1")  # fmt: skip
    assert login.returncode == 0, login.stderr
    qwen = (EXAMPLES / "qwen-deployment.yaml").read_text()
    assert 'extra_args: [--max-num-seqs, "64"]' in qwen
    bad = tmp_path / "bad-args.yaml"
    bad.write_text(qwen.replace('extra_args: [--max-num-seqs, "64"]', 'extra_args: [--port, "9000"]'))

    dry = run(client_venv, home, "apply", "-f", str(bad), "--dry-run")

    assert dry.returncode == 1
    assert "endpoint/qwen-chat would be created" in dry.stdout
    assert "error: modeldeployment/qwen-chat: extra_args: --port is set by ModelDeck" in dry.stdout, dry.stdout
    assert "would be created" not in dry.stdout.split("modeldeployment/qwen-chat")[1]
    assert dry.stderr == "error: 1 document(s) would not be applied; nothing was changed (dry run)\n"
    assert not ModelDeployment.objects.filter(name="qwen-chat").exists()
    assert not Endpoint.objects.filter(name="qwen-chat").exists()  # the dry run's endpoint was rolled back

    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: {name: ep\n")
    refused = run(client_venv, home, "apply", "-f", str(bad), "-f", str(broken))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"error: {broken} is not valid YAML at line 4, column 1: "), refused.stderr
    assert "unicode string" not in refused.stderr

    aliases = tmp_path / "aliases.yaml"
    aliases.write_text("apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: {name: ep}\nspec: {path: &p /ep, x: *p}\n")
    refused = run(client_venv, home, "apply", "-f", str(aliases))
    assert refused.returncode == 1
    assert refused.stderr == (f"error: {aliases}: line 4, column 14: YAML anchors and aliases (&name / *name) aren't accepted; "
                              "write the values out.\n")  # fmt: skip

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    refused = run(client_venv, home, "apply", "-f", str(empty))
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: {empty} has no documents; expected one or more `kind: ModelDeployment`")
