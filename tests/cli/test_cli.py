"""The `modeldeck` command from a separate virtual environment, against a live server.

The client venv gets only the project itself (`pip install --no-deps .`: the package
`modeldeck_cli` and its console script); httpx and PyYAML come from the project venv's
site-packages through a .pth file, so nothing is downloaded. The command runs as a subprocess
and talks to the live server over HTTP, as from a laptop.
"""

from __future__ import annotations

import ast
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deployments.models import DeploymentState, ModelDeployment
from tests.cli.conftest import run
from tests.deployments.conftest import state_of, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_the_cli_imports_nothing_of_the_server():
    allowed = set(sys.stdlib_module_names) | {"httpx", "yaml", "modeldeck_cli"}
    for path in (ROOT / "modeldeck_cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


@pytest.mark.django_db(transaction=True)
def test_login_apply_running_and_dry_run_diff_from_a_client_venv(
    client_venv, demo, cluster, live_server, tmp_path, login_limits_reset
):
    home = tmp_path / "home"
    home.mkdir()
    # Django is not even loaded by the client.
    probe = subprocess.run([str(client_venv / "bin" / "python"), "-c",
                            "import sys, modeldeck_cli.main; print('django' in sys.modules)"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert probe.stdout.strip() == "False"

    bad = run(client_venv, home, "login", "--url", live_server.url, "--username", "admin", "--password", "wrong")
    # Said as the answer to this login, not "Not signed in … Run `modeldeck login`".
    assert bad.returncode == 1 and bad.stderr == f"error: Wrong username or password for {live_server.url}.\n", bad.stderr
    login = run(client_venv, home, "login", "--url", live_server.url, "--username", "admin",
                "--password", "cli-Test-password-1")  # fmt: skip
    assert login.returncode == 0, login.stderr
    config = home / ".config" / "modeldeck" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = json.loads(config.read_text())
    assert saved["url"] == live_server.url and saved["token"].startswith("mdk_") and saved["organization"] == "demo"

    manifest = tmp_path / "qwen.yaml"
    manifest.write_text((EXAMPLES / "qwen-deployment.yaml").read_text())
    applied = run(client_venv, home, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert "modeldeployment/qwen-chat created" in applied.stdout
    deployment = ModelDeployment.objects.get(name="qwen-chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    listed = run(client_venv, home, "get", "deployments")
    assert listed.returncode == 0 and "qwen-chat" in listed.stdout and "running" in listed.stdout.lower()
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[-1] == "POOL" and row.split()[-1] == deployment.pool.name  # its name, not its id

    again = run(client_venv, home, "apply", "-f", str(manifest))
    assert again.returncode == 0 and "modeldeployment/qwen-chat unchanged" in again.stdout

    manifest.write_text(manifest.read_text().replace("replicas: {min: 1, max: 1}", "replicas: {min: 1, max: 2}"))
    dry = run(client_venv, home, "apply", "-f", str(manifest), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "modeldeployment/qwen-chat would be configured:" in dry.stdout and "replicas.max: 1 → 2" in dry.stdout
    assert deployment.revisions.count() == 1  # a dry run changes nothing

    described = run(client_venv, home, "describe", "deployment", "qwen-chat")
    assert described.returncode == 0 and "served_model_name: qwen-chat" in described.stdout and "events:" in described.stdout
    models = run(client_venv, home, "get", "models", "-o", "json")
    assert any(m["name"] == "qwen2.5-0.5b-instruct" for m in json.loads(models.stdout))
    pools = run(client_venv, home, "get", "pools")
    assert "sandbox" in pools.stdout

    # `logs` reads GET /api/v1/deployments/{id}/logs/ (added with the deployment page's Logs tab).
    from django.urls import NoReverseMatch, reverse

    try:
        reverse("deployment-logs", args=[deployment.pk])
    except NoReverseMatch:
        missing = run(client_venv, home, "logs", "qwen-chat")
        assert missing.returncode == 1 and "Not found" in missing.stderr and "Traceback" not in missing.stderr
    else:
        logs = run(client_venv, home, "logs", "qwen-chat", "--tail", "20")
        assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr

    # MODELDECK_URL / MODELDECK_TOKEN instead of the saved login; a wrong token is a clear error.
    (home / ".config" / "modeldeck" / "config.json").unlink()
    by_env = run(client_venv, home, "get", "pools", env={"MODELDECK_URL": live_server.url, "MODELDECK_TOKEN": saved["token"]})
    assert by_env.returncode == 0 and "sandbox" in by_env.stdout
    wrong = run(client_venv, home, "get", "pools", env={"MODELDECK_URL": live_server.url, "MODELDECK_TOKEN": "mdk_wrongwrongwrongwrong"})
    assert wrong.returncode == 1 and "Not signed in" in wrong.stderr and "Traceback" not in wrong.stderr
    bad_token = run(client_venv, home, "login", "--url", live_server.url, "--token", "mdk_wrongwrongwrongwrong")
    assert bad_token.returncode == 1 and f"{live_server.url} refused the token" in bad_token.stderr, bad_token.stderr
    assert "Run `modeldeck login`" not in bad_token.stderr
    with_token = run(client_venv, home, "login", "--url", live_server.url, "--token", saved["token"])
    assert with_token.returncode == 0 and json.loads(config.read_text())["token"] == saved["token"]

    deleted = run(client_venv, home, "delete", "-f", str(manifest))
    assert deleted.returncode == 0 and "modeldeployment/qwen-chat deleted" in deleted.stdout


def test_a_closed_pipe_ends_the_cli_quietly(tmp_path):
    """`modeldeck history x | head` printed a BrokenPipeError traceback once head had its lines."""
    code = ("import sys\nfrom modeldeck_cli.main import main\n"
            "def write(line):\n    raise BrokenPipeError(32, 'Broken pipe')\n"
            "sys.exit(main(['logout'], out=write))\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_apply_names_the_file_and_its_own_line_for_anchors_and_empty_files(tmp_path):
    """With several -f files the server sees them joined: an anchor in the second file was
    reported at line 50 of the whole, and an empty file among others passed unnoticed."""
    from modeldeck_cli.main import CLIError, _read  # noqa: PLC0415 - the file reader, under test

    pool = tmp_path / "pool.yaml"
    pool.write_text("apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: {name: a}\nspec: {path: /a}\n" * 1)
    anchored = tmp_path / "anchor.yaml"
    anchored.write_text("apiVersion: modeldeck.io/v1\nkind: Endpoint\nmetadata: &m {name: b}\nspec: {path: /b}\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n---\n")
    with pytest.raises(CLIError, match=r"anchor\.yaml: line 3, column 11: YAML anchors and aliases"):
        _read([str(pool), str(anchored)])
    with pytest.raises(CLIError, match=r"empty\.yaml has no documents"):
        _read([str(pool), str(empty)])
    assert "kind: Endpoint" in _read([str(pool)])


def test_a_command_refuses_an_unknown_argument_with_its_own_usage(tmp_path):
    """QA: `modeldeck scale chat 3` answered with the top parser's `usage: modeldeck [-h] COMMAND`
    and no word on how scale takes a count."""
    root = str(Path(__file__).resolve().parents[2])  # this checkout's modeldeck_cli
    code = "import sys\nfrom modeldeck_cli.main import main\nsys.exit(main(sys.argv[1:]))\n"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                              env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": root})  # fmt: skip

    done = cli("scale", "chat", "3")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: modeldeck scale ")
    assert ("modeldeck scale: error: unrecognized arguments: 3 (give the count as --replicas N, "
            "or the autoscaler's bounds as --min N --max N)") in done.stderr  # fmt: skip
    done = cli("keys", "create", "--name", "bot")
    assert done.returncode == 2 and "modeldeck keys create: error: unrecognized arguments: --name" in done.stderr


def _cli_here(home: Path, *args: str, stdin: str | None = "") -> subprocess.CompletedProcess:
    """This checkout's `modeldeck ARGS` as a subprocess, with stdin closed unless given."""
    code = "import sys\nfrom modeldeck_cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          input=stdin, env={"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})  # fmt: skip


def test_login_without_a_terminal_asks_for_the_flags_with_its_usage(tmp_path):
    """QA: `modeldeck login --url URL` in a script (stdin closed) ended in an EOFError traceback."""
    done = _cli_here(tmp_path, "login", "--url", "http://127.0.0.1:9")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "usage: modeldeck login " in done.stderr
    assert "give --username and --password, or --token" in done.stderr


@pytest.mark.parametrize("status", [200, 404])
def test_an_address_that_is_not_the_api_is_said_so_not_a_traceback(tmp_path, status):
    """QA: a URL with a path, or another web server, answered HTML: a 200 page was a JSONDecodeError
    traceback, a 404 page was quoted whole as the error."""
    import http.server  # noqa: PLC0415 - this test's stand-in web server only
    import threading  # noqa: PLC0415 - idem

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"<!doctype html><html><body>" + b"<p>a web page</p>" * 50 + b"</body></html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/console"
    try:
        listed = _cli_here(tmp_path, "get", "deployments", "--url", url, "--token", "mdk_x")
        login = _cli_here(tmp_path, "login", "--url", url, "--token", "mdk_x")
    finally:
        server.shutdown()
    for done in (listed, login):
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "<html>" not in done.stderr
        assert f"{url} answered {status} with a web page, not the ModelDeck API's JSON" in done.stderr
