"""Operating a deployment from the terminal with `modeldeck` (scale, deactivate, activate,
rollback, history), API keys, usage and a chat through the gateway — the client venv of
test_cli.py, a subprocess against a live server, every action through the REST API."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from console.money import money_text
from deployments import observe
from deployments.models import DeploymentState, ModelDeployment
from gateway.models import UsageRecord
from gateway.tasks import flush_usage
from projects.keys import PLAYGROUND_KEY_NAME, api_key_create, api_key_revoke, playground_key_issue
from projects.models import APIKey, APIKeyScope, Organization, Role
from projects.services import member_add
from tests.cli.conftest import run
from tests.deployments.conftest import state_of, wait_for
from tests.gateway.conftest import (  # noqa: F401 - fixtures shared with the gateway tests
    _clean_redis,
    engine,
    engine_server,
    start_console,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "cli-Test-password-1"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def _signed_in(venv: Path, tmp_path: Path, url: str) -> Path:
    """A HOME where admin has run `modeldeck login` against `url`."""
    home = tmp_path / "home"
    home.mkdir()
    login = run(venv, home, "login", "--url", url, "--username", "admin", "--password", PASSWORD)
    assert login.returncode == 0, login.stderr
    return home


def _qwen_running(venv: Path, home: Path, tmp_path: Path) -> ModelDeployment:
    manifest = tmp_path / "qwen.yaml"
    manifest.write_text((EXAMPLES / "qwen-deployment.yaml").read_text())
    applied = run(venv, home, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    deployment = ModelDeployment.objects.get(name="qwen-chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    return deployment


def _viewer_token(admin) -> str:
    """A REST key of `viewer`, a viewer of the demo organization (reads only)."""
    viewer = get_user_model().objects.create_user("viewer", password=PASSWORD)
    org = Organization.objects.get(slug="demo")
    member_add(user=admin, organization=org, username="viewer", role=Role.VIEWER)
    _, secret = api_key_create(user=viewer, organization=org, name="viewer cli", scope=APIKeyScope.REST)
    return secret


def _replicas(deployment: ModelDeployment) -> dict:
    deployment.refresh_from_db()
    return deployment.spec()["replicas"]


def _failed_in_words(result, *words: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.django_db(transaction=True)
def test_scale_history_rollback_deactivate_activate_from_the_terminal(
    client_venv, demo, cluster, live_server, tmp_path, login_limits_reset
):
    home = _signed_in(client_venv, tmp_path, live_server.url)
    deployment = _qwen_running(client_venv, home, tmp_path)

    scaled = run(client_venv, home, "scale", "qwen-chat", "--replicas", "2")
    assert scaled.returncode == 0, scaled.stderr
    assert "deployment/qwen-chat scaled to 2 replicas (revision 2)" in scaled.stdout
    assert _replicas(deployment) == {"min": 2, "max": 2}
    # One bound: the other keeps its value (the autoscaler's range).
    bounds = run(client_venv, home, "scale", str(deployment.pk), "--max", "3")
    assert bounds.returncode == 0 and "scaled to 2–3 replicas (revision 3)" in bounds.stdout, bounds.stderr
    assert _replicas(deployment) == {"min": 2, "max": 3}

    history = run(client_venv, home, "history", "qwen-chat")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].split() == ["REVISION", "CREATED", "BY", "SUMMARY", "SERVES"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]  # newest first
    assert "Scaled to 2–3 replicas" in lines[1] and "admin" in lines[1] and "current" in lines[1]
    deployment.refresh_from_db()
    serving = deployment.serving_revision.number
    assert "serving" in lines[1 + 3 - serving]

    # No --to: the revision before the current one, re-applied as a new revision.
    undone = run(client_venv, home, "rollback", "qwen-chat")
    assert undone.returncode == 0, undone.stderr
    # What the server did, not the strategy asked for: only the autoscaler's bounds changed.
    assert "deployment/qwen-chat rolled back to revision 2 as revision 4 (no rollout needed)." in undone.stdout
    assert "blue-green" not in undone.stdout
    assert _replicas(deployment) == {"min": 2, "max": 2}
    to_first = run(client_venv, home, "rollback", "qwen-chat", "--to", "1")
    assert to_first.returncode == 0 and "rolled back to revision 1 as revision 5 (scaled in place)." in to_first.stdout, to_first.stderr
    assert _replicas(deployment) == {"min": 1, "max": 1}
    assert "Rollback to revision 1" in run(client_venv, home, "history", "qwen-chat").stdout.splitlines()[1]
    again = run(client_venv, home, "rollback", "qwen-chat", "--to", "1")  # the same spec: no new revision
    assert again.returncode == 0 and "revision 5 already has revision 1's spec; nothing changed" in again.stdout, again.stderr
    same = run(client_venv, home, "rollback", "qwen-chat", "--to", "5")
    _failed_in_words(same, "Revision 5 is already the current one")

    off = run(client_venv, home, "deactivate", "qwen-chat")
    assert off.returncode == 0 and "deployment/qwen-chat deactivated" in off.stdout, off.stderr
    assert state_of(deployment) == DeploymentState.DEACTIVATED
    assert "Deactivated" in run(client_venv, home, "get", "deployments").stdout
    on = run(client_venv, home, "activate", "qwen-chat")
    assert on.returncode == 0 and "deployment/qwen-chat activated" in on.stdout, on.stderr
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    # A minimum above the maximum takes the maximum with it (the API takes both bounds).
    raised = run(client_venv, home, "scale", "qwen-chat", "--min", "2")
    assert raised.returncode == 0 and "scaled to 2 replicas" in raised.stdout, raised.stderr
    assert _replicas(deployment) == {"min": 2, "max": 2}
    # A rollback that changes what the pods run rolls out, and says so as the server does.
    manifest = tmp_path / "qwen.yaml"
    manifest.write_text(manifest.read_text().replace("context_length: 4096", "context_length: 8192"))
    assert run(client_venv, home, "apply", "-f", str(manifest)).returncode == 0
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING and deployment.serving_revision.number == 7)
    rolled = run(client_venv, home, "rollback", "qwen-chat")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.startswith("deployment/qwen-chat rolled back to revision 6 as revision 8. Rolling out "
                                    "revision 8; revision 7 keeps serving until it is ready."), rolled.stdout  # fmt: skip
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)

    # A count the API refuses: said about the flag given, not about the API's min and max fields.
    revisions = deployment.revisions.count()
    for args, words in ((["--replicas", "-1"], "--replicas -1: give a whole number of replicas, at least 1"),
                        (["--min", "-2"], "--min -2: give a whole number of replicas, at least 0"),
                        (["--max", "0"], "--max 0: give a whole number of replicas, at least 1"),
                        (["--replicas", "500"], "--replicas 500: Ensure this value is less than or equal to 100")):  # fmt: skip
        refused = run(client_venv, home, "scale", "qwen-chat", *args)
        _failed_in_words(refused, words)
        assert "min:" not in refused.stderr and "max:" not in refused.stderr, refused.stderr
    assert deployment.revisions.count() == revisions

    # A name nobody has: said in words, exit 1, for every command.
    for args in (["scale", "nope", "--replicas", "1"], ["deactivate", "nope"], ["activate", "nope"],
                 ["rollback", "nope"], ["history", "nope"]):  # fmt: skip
        _failed_in_words(run(client_venv, home, *args), "No deployment named 'nope'")
    _failed_in_words(run(client_venv, home, "history", "999999"), "No deployment with id 999999")

    # A viewer sees the deployment but may not change it: the server's reason, not a traceback.
    as_viewer = {"MODELDECK_URL": live_server.url, "MODELDECK_TOKEN": _viewer_token(demo)}
    revisions = deployment.revisions.count()
    _failed_in_words(run(client_venv, home, "scale", "qwen-chat", "--replicas", "4", env=as_viewer),
                     "You lack the permission", "Viewers cannot change deployments")  # fmt: skip
    _failed_in_words(run(client_venv, home, "rollback", "qwen-chat", env=as_viewer), "You lack the permission")
    _failed_in_words(run(client_venv, home, "deactivate", "qwen-chat", env=as_viewer),
                     "You lack the permission", "Viewers cannot deactivate or activate deployments")  # fmt: skip
    assert deployment.revisions.count() == revisions and state_of(deployment) == DeploymentState.RUNNING
    assert run(client_venv, home, "history", "qwen-chat", env=as_viewer).returncode == 0  # reading is allowed

    # A server that is not there.
    gone = run(client_venv, home, "scale", "qwen-chat", "--replicas", "1", "--url", f"http://127.0.0.1:{_closed_port()}")
    _failed_in_words(gone, "is unreachable (connection refused)", "check the server URL")

    for command in ("scale", "deactivate", "activate", "rollback", "history", "usage", "chat"):
        helped = run(client_venv, home, command, "--help")
        assert helped.returncode == 0 and "usage: modeldeck " + command in helped.stdout
    for action in ("list", "create", "revoke"):
        assert run(client_venv, home, "keys", action, "--help").returncode == 0


@pytest.mark.django_db(transaction=True)
def test_keys_chat_through_the_gateway_and_usage(
    client_venv, demo, cluster, engine, tmp_path, login_limits_reset, settings  # noqa: F811
):
    console = start_console()  # console.asgi's composition: REST and the gateway (/v1) on one address
    settings.GATEWAY_BASE_URL = console.url  # MODELDECK_GATEWAY_URL: the REST API gives it per deployment
    try:
        home = _signed_in(client_venv, tmp_path, console.url)
        deployment = _qwen_running(client_venv, home, tmp_path)

        created = run(client_venv, home, "keys", "create", "cli-chat", "--deployments", "qwen-chat", "--expires", "30d")
        assert created.returncode == 0, created.stderr
        assert "shown this once" in created.stdout
        secret = next(line.strip() for line in created.stdout.splitlines() if line.startswith("    mdk_"))
        key = APIKey.objects.get(name="cli-chat")
        assert secret.startswith(key.prefix) and secret not in key.key_hash
        assert list(key.deployments.all()) == [deployment] and key.scope == "gateway"
        assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)

        listed = run(client_venv, home, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if key.prefix in line)
        assert "cli-chat" in row and "gateway" in row and "active" in row and "qwen-chat" in row
        assert secret not in listed.stdout

        # The chat streams through the real gateway to the deployment's engine.
        chat = run(client_venv, home, "chat", "qwen-chat", "Hello there, gateway", env={"MODELDECK_API_KEY": secret})
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout == "You said: Hello there, gateway\n"
        sent = engine.requests[-1]
        assert sent.body["model"] == "qwen-chat" and sent.body["stream"] is True
        # Signed in, the CLI calls the gateway where the server says it is (its gateway_url).
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            settings.GATEWAY_BASE_URL = f"http://127.0.0.1:{closed.getsockname()[1]}"
        _failed_in_words(run(client_venv, home, "chat", "qwen-chat", "hi", env={"MODELDECK_API_KEY": secret}),
                         settings.GATEWAY_BASE_URL)  # fmt: skip
        settings.GATEWAY_BASE_URL = console.url
        # Without a login: the served model name, the gateway given by flag; the prompt from stdin.
        bare = tmp_path / "bare"
        bare.mkdir()
        piped = run(client_venv, bare, "chat", "qwen-chat", "-", "--api-key", secret, "--gateway-url", console.base_url,
                    input="Again please")  # fmt: skip
        assert piped.returncode == 0 and piped.stdout == "You said: Again please\n", piped.stderr
        _failed_in_words(run(client_venv, home, "chat", "nope", "hi", env={"MODELDECK_API_KEY": secret}),
                         "No deployment named 'nope'")  # fmt: skip
        _failed_in_words(run(client_venv, bare, "chat", "nope", "hi", "--api-key", secret, "--gateway-url", console.url),
                         "No deployment named nope on the gateway")  # fmt: skip

        flush_usage()
        usage = run(client_venv, home, "usage", "--range", "7d")
        assert usage.returncode == 0, usage.stderr
        lines = usage.stdout.splitlines()
        assert lines[0] == "Calls with your API keys over the last 7 days:"
        assert lines[1].split()[:4] == ["DEPLOYMENT", "REQUESTS", "PROMPT", "TOKENS"]
        qwen = next(line.split() for line in lines if line.startswith("qwen-chat"))
        total = next(line.split() for line in lines if line.startswith("TOTAL"))
        assert qwen[1] == "2" and total[1] == "2" and qwen[-1] == "USD"
        # Every cost as the console shows it (console.money.money_text), rows and total alike.
        spent = sum(UsageRecord.objects.filter(deployment=deployment).values_list("cost", flat=True), Decimal(0))
        assert spent > 0 and qwen[-2] == total[-2] == money_text(spent), (qwen, total, spent)
        _failed_in_words(run(client_venv, home, "usage", env={"MODELDECK_TOKEN": "mdk_wrongwrongwrongwrong"}),
                         "Not signed in")  # fmt: skip

        # Revoked by its prefix: the gateway refuses it at once.
        revoked = run(client_venv, home, "keys", "revoke", key.prefix, "--reason", "leaked in a log")
        assert revoked.returncode == 0 and f"({key.prefix}) revoked" in revoked.stdout, revoked.stderr
        key.refresh_from_db()
        assert key.revoked_at is not None and key.revoked_reason == "leaked in a log"
        _failed_in_words(run(client_venv, home, "chat", "qwen-chat", "hi", env={"MODELDECK_API_KEY": secret}),
                         "The gateway refused the API key")  # fmt: skip
        _failed_in_words(run(client_venv, home, "keys", "revoke", "mdk_zzzzzzzz"), "No API key of yours with prefix")

        # An id that is no key of yours: 404 in words; a viewer may not make gateway keys: 403.
        _failed_in_words(run(client_venv, home, "keys", "revoke", str(key.pk + 1000)), "No API key with id")
        as_viewer = {"MODELDECK_TOKEN": _viewer_token(demo)}
        _failed_in_words(run(client_venv, home, "keys", "create", "mine", env=as_viewer),
                         "You lack the permission", "Viewers cannot create gateway keys")  # fmt: skip
        assert not APIKey.objects.filter(name="mine").exists()
    finally:
        console.stop()



def _playground_keys(deployment: ModelDeployment):
    return APIKey.objects.filter(name__startswith=PLAYGROUND_KEY_NAME, deployments=deployment).order_by("pk")


def _key_of_last_call() -> int:
    flush_usage()
    return UsageRecord.objects.order_by("-pk").values_list("api_key_id", flat=True).first()


@pytest.mark.django_db(transaction=True)
def test_chat_signed_in_without_a_key_gets_a_short_lived_key_and_reuses_it(
    client_venv, demo, cluster, engine, tmp_path, login_limits_reset, settings  # noqa: F811
):
    """Signed in, `chat` asked for --api-key or MODELDECK_API_KEY all the same."""
    console = start_console()
    settings.GATEWAY_BASE_URL = console.url
    try:
        home = _signed_in(client_venv, tmp_path, console.url)
        deployment = _qwen_running(client_venv, home, tmp_path)
        token = json.loads((home / ".config" / "modeldeck" / "config.json").read_text())["token"]

        first = run(client_venv, home, "chat", "qwen-chat", "Hello without a key")
        assert first.returncode == 0, first.stderr
        assert first.stdout == "You said: Hello without a key\n"
        key = _playground_keys(deployment).get()  # the console playground's kind of key
        assert key.user == demo and key.scope == "gateway" and list(key.deployments.all()) == [deployment]
        assert timedelta(minutes=14) < key.expires_at - timezone.now() <= timedelta(minutes=15)
        assert _key_of_last_call() == key.pk
        kept = home / ".config" / "modeldeck" / "playground-keys.json"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        (slot, entry), = json.loads(kept.read_text()).items()
        assert slot.startswith(f"{console.url} deployment {deployment.pk} ") and entry["api_key"].startswith(key.prefix)
        assert token not in kept.read_text()

        # Again: the same key, neither a new one nor the first revoked.
        again = run(client_venv, home, "chat", str(deployment.pk), "And again")
        assert again.returncode == 0 and again.stdout == "You said: And again\n", again.stderr
        assert list(_playground_keys(deployment)) == [key] and _key_of_last_call() == key.pk
        key.refresh_from_db()
        assert key.revoked_at is None

        # A minute or less left: a new key (issuing it revokes the kept one).
        soon = (timezone.now() + timedelta(seconds=50)).isoformat()
        kept.write_text(json.dumps({slot: {**entry, "expires_at": soon}}))
        renewed = run(client_venv, home, "chat", "qwen-chat", "Renewed")
        assert renewed.returncode == 0 and renewed.stdout == "You said: Renewed\n", renewed.stderr
        first_key, second_key = _playground_keys(deployment)
        first_key.refresh_from_db()
        assert first_key == key and first_key.revoked_at is not None and second_key.revoked_at is None
        assert _key_of_last_call() == second_key.pk
        assert json.loads(kept.read_text())[slot]["api_key"].startswith(second_key.prefix)

        # The kept key revoked meanwhile (the console's playground issued one): the gateway's 401,
        # one new key, one retry — the answer, no error.
        playground_key_issue(user=demo, organization=deployment.project.organization, deployment=deployment)
        retried = run(client_venv, home, "chat", "qwen-chat", "After a revoke")
        assert retried.returncode == 0 and retried.stdout == "You said: After a revoke\n", retried.stderr
        keys = list(_playground_keys(deployment))
        assert len(keys) == 4 and [k.revoked_at is None for k in keys] == [False, False, False, True]
        assert _key_of_last_call() == keys[-1].pk

        # A key given takes precedence: no key is issued, and a refused one is not replaced.
        given, secret = api_key_create(user=demo, organization=deployment.project.organization, name="given")
        for env, flags in (({"MODELDECK_API_KEY": secret}, []), ({}, ["--api-key", secret])):
            called = run(client_venv, home, "chat", "qwen-chat", "Mine", *flags, env=env)
            assert called.returncode == 0 and called.stdout == "You said: Mine\n", called.stderr
            assert _key_of_last_call() == given.pk
        api_key_revoke(user=demo, key=given)
        _failed_in_words(run(client_venv, home, "chat", "qwen-chat", "hi", "--api-key", secret),
                         "The gateway refused the API key")  # fmt: skip
        assert _playground_keys(deployment).count() == 4

        # A viewer may not have gateway keys: the API's refusal in words, and no key.
        refused = run(client_venv, home, "chat", "qwen-chat", "hi", env={"MODELDECK_TOKEN": _viewer_token(demo)})
        _failed_in_words(refused, "You lack the permission to get a gateway key for qwen-chat",
                         "Viewers cannot create gateway keys", "--api-key or MODELDECK_API_KEY")  # fmt: skip
        assert _playground_keys(deployment).count() == 4 and refused.stdout == ""

        # Not signed in and no key: what to give, or to sign in.
        bare = tmp_path / "bare"
        bare.mkdir()
        _failed_in_words(run(client_venv, bare, "chat", "qwen-chat", "hi", "--gateway-url", console.url),
                         "No gateway key", "MODELDECK_API_KEY", "`modeldeck login`")  # fmt: skip
        # Signing out forgets the kept keys.
        assert run(client_venv, home, "logout").returncode == 0 and not kept.exists()
    finally:
        console.stop()


@pytest.mark.django_db(transaction=True)
def test_get_deployments_shows_an_external_endpoints_health(
    client_venv, demo, cluster, live_server, tmp_path, settings, login_limits_reset
):
    from catalog.models import CatalogModel
    from deployments.external import external_deployment_create
    from gateway.tasks import check_external_endpoints

    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True  # the operator setting: a local URL
    org = Organization.objects.get(slug="demo")
    external_deployment_create(
        user=demo, project=org.projects.get(slug="demo"), model=CatalogModel.objects.filter(organization=org).first(),
        name="onprem", url=f"http://127.0.0.1:{_closed_port()}/v1",
    )  # fmt: skip
    home = _signed_in(client_venv, tmp_path, live_server.url)
    # Its first check ran on the create's commit; as it stands until that check has answered:
    ModelDeployment.objects.filter(name="onprem").update(health="unknown", health_detail="", health_checked_at=None)

    before = run(client_venv, home, "get", "deployments")
    assert before.returncode == 0, before.stderr
    assert before.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert "Running (endpoint not checked yet)" in next(line for line in before.stdout.splitlines() if "onprem" in line)

    assert check_external_endpoints()["healthy"] == 0  # the real check: connection refused
    after = run(client_venv, home, "get", "deployment", "onprem")
    assert after.returncode == 0, after.stderr
    assert "Running (endpoint unreachable)" in after.stdout.splitlines()[1]
    described = run(client_venv, home, "describe", "deployment", "onprem")
    assert "status: Running (endpoint unreachable: connection refused)" in described.stdout.splitlines(), described.stdout
    _failed_in_words(run(client_venv, home, "get", "deployment", "offprem"), "No deployment named 'offprem'")
    # Nothing of it runs here: no replicas to scale, said in words rather than in REST terms.
    scaled = run(client_venv, home, "scale", "onprem", "--replicas", "2")
    _failed_in_words(scaled, "onprem is an external endpoint", "own infrastructure", "no replicas of it to scale")
    assert "PATCH" not in scaled.stderr, scaled.stderr
    _failed_in_words(run(client_venv, home, "logs", "onprem"), "An external deployment runs no pods here",
                     "ModelDeck has no log of it")  # fmt: skip



@pytest.mark.django_db(transaction=True)
def test_logs_of_a_deactivated_deployment_say_so_and_how_to_activate_it(
    client_venv, demo, cluster, live_server, tmp_path, login_limits_reset
):
    """`modeldeck logs` on a deactivated deployment said only "This deployment has no pods on its
    compute pool right now." (the API's 503, logged as a server error), as if the pool were down."""
    home = _signed_in(client_venv, tmp_path, live_server.url)
    deployment = _qwen_running(client_venv, home, tmp_path)
    running = run(client_venv, home, "logs", "qwen-chat", "--tail", "5")
    assert running.returncode == 0 and running.stdout.strip(), running.stderr

    # Retry is for a failed deployment only, and says so.
    _failed_in_words(run(client_venv, home, "retry", "qwen-chat"), "Only a failed deployment can be retried",
                     "this one is running")  # fmt: skip

    off = run(client_venv, home, "deactivate", "qwen-chat")
    assert off.returncode == 0, off.stderr
    wait_for(lambda: not observe.deployment_replicas(deployment).pods)
    for ref in ("qwen-chat", str(deployment.pk)):
        logs = run(client_venv, home, "logs", ref)
        _failed_in_words(logs, "qwen-chat is deactivated", "no running pods",
                         f"`modeldeck activate {ref}` starts its pods again")  # fmt: skip
        assert logs.stdout == "" and "right now" not in logs.stderr and "read the logs where it runs" not in logs.stderr
    # Following stops at once with the same words, rather than polling nothing.
    _failed_in_words(run(client_venv, home, "logs", "qwen-chat", "-f"), "qwen-chat is deactivated")

    # The command it names brings the pods, and their log, back.
    on = run(client_venv, home, "activate", "qwen-chat")
    assert on.returncode == 0, on.stderr
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    back = run(client_venv, home, "logs", "qwen-chat", "--tail", "5")
    assert back.returncode == 0 and back.stdout.strip(), back.stderr


@pytest.mark.django_db(transaction=True)
def test_logs_of_a_deployment_idle_at_zero_say_the_next_request_starts_a_pod(
    client_venv, demo, cluster, live_server, tmp_path, login_limits_reset
):
    """Scaled to zero by its autoscaling, `logs` said "no pods on its compute pool right now" (a
    503, as for a pool that is down); following now waits for the pod the next request starts."""
    from deployments.models import DeploymentScale
    from deployments.tasks import push

    home = _signed_in(client_venv, tmp_path, live_server.url)
    manifest = tmp_path / "qwen.yaml"
    manifest.write_text((EXAMPLES / "qwen-deployment.yaml").read_text().replace(
        "replicas: {min: 1, max: 1}",
        "replicas: {min: 0, max: 1}\n  autoscaling: {metric: concurrency, target: 1, scale_to_zero_after_seconds: 60}",
    ))  # fmt: skip
    assert run(client_venv, home, "apply", "-f", str(manifest)).returncode == 0
    deployment = ModelDeployment.objects.get(name="qwen-chat")
    wait_for(lambda: state_of(deployment) == DeploymentState.RUNNING)
    DeploymentScale.objects.update_or_create(deployment=deployment, defaults={"desired": 0})  # the autoscaler's verdict
    push(deployment.pk)
    wait_for(lambda: not observe.deployment_replicas(deployment).pods)

    _failed_in_words(run(client_venv, home, "logs", "qwen-chat"), "scaled to zero while idle",
                     "The next request through the gateway starts a pod")  # fmt: skip
    environment = {"PATH": f"{client_venv / 'bin'}:/usr/bin:/bin", "HOME": str(home),
                   "XDG_CONFIG_HOME": str(home / ".config")}  # fmt: skip
    follow = subprocess.Popen(
        [str(client_venv / "bin" / "modeldeck"), "logs", "qwen-chat", "-f", "--interval", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment, cwd=home,
    )  # fmt: skip
    try:
        time.sleep(1.5)
        assert follow.poll() is None  # still following, not failed
        DeploymentScale.objects.filter(deployment=deployment).update(desired=1)  # a request woke it
        push(deployment.pk)
        wait_for(lambda: any(p.ready for p in observe.deployment_replicas(deployment).pods))
        time.sleep(2)
    finally:
        follow.terminate()
        out, err = follow.communicate(timeout=10)
    assert err.count("scaled to zero while idle") == 1, err  # said once, not every poll
    assert out.strip(), (out, err)  # the new pod's log followed
