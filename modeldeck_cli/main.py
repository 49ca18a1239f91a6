"""The `modeldeck` command: login, apply -f, delete -f, get, describe, logs, and operating a
deployment (scale, deactivate, activate, retry, rollback, history), keys, usage and chat — over the REST
API (chat: the gateway)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import yaml

from modeldeck_cli import config
from modeldeck_cli.client import Client, CLIError, body_text, unreachable
from modeldeck_cli.money import money_text

KINDS = {
    # name (and aliases) → (collection path, table columns)
    "deployments": ("/api/v1/deployments/", ["id", "name", "status", "served_model_name", "current_revision", "gpus_held", "pool_name:pool"]),
    "models": ("/api/v1/models/", ["id", "name", "source", "source_ref", "task", "deployment_count"]),
    "pools": ("/api/v1/pools/", ["id", "name", "kind", "engine_label", "region", "reachable"]),
}
ALIASES = {
    "deployment": "deployments", "deploy": "deployments", "modeldeployment": "deployments",
    "modeldeployments": "deployments", "model": "models", "pool": "pools", "computepool": "pools",
    "computepools": "pools",
}  # fmt: skip


def _kind(value: str) -> str:
    kind = ALIASES.get(value.lower(), value.lower())
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"choose one of: {', '.join(KINDS)}")
    return kind


def _client(args: argparse.Namespace) -> Client:
    settings = config.resolve(args.url, args.token)
    if not settings.token:
        raise CLIError("No token: run `modeldeck login` or set MODELDECK_TOKEN.")
    return Client(settings.url, settings.token, organization=settings.organization)


def _scope(client: Client, kind: str) -> dict[str, str]:
    """Deployments and models are looked up and listed in the organization signed in to: a
    superuser's API lists span every organization, where another may use the same name."""
    organization = client.organization
    return {"organization": organization} if organization and kind in ("deployments", "models") else {}


def _check_syntax(text: str, name: str) -> None:
    """Say which file is not YAML, and where: the server sees the files joined into one text, so
    its line numbers would not be the file's. Only the parser's events: nothing is built here
    (the server's loader decides what it accepts)."""
    documents = 0
    try:
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                # The server refuses them too, but at a line of the files joined together.
                mark = event.start_mark
                raise CLIError(f"{name}: line {mark.line + 1}, column {mark.column + 1}: YAML anchors and aliases "
                               "(&name / *name) aren't accepted; write the values out.")  # fmt: skip
            if isinstance(event, yaml.CollectionStartEvent) or (isinstance(event, yaml.ScalarEvent) and event.value):
                documents = 1  # something in it (an empty document, "---" alone, is one empty scalar)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise CLIError(f"{name} is not valid YAML{at}: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, UnicodeError):
        raise CLIError(f"{name} is not valid YAML (it holds a character YAML does not allow).") from None
    if not documents:
        # Alone, the server says so; joined with other files it would pass unnoticed.
        raise CLIError(f"{name} has no documents; expected one or more `kind: ModelDeployment` documents "
                       "(or ComputePool, ProfileBundle, Model, Endpoint).")  # fmt: skip


def _read(paths: Sequence[str]) -> str:
    texts = []
    for path in paths:
        if path == "-":
            texts.append(sys.stdin.read())
        else:
            try:
                with open(path, encoding="utf-8") as fh:
                    texts.append(fh.read())
            except OSError as exc:
                raise CLIError(f"can't read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise CLIError(f"can't read {path}: it is not UTF-8 text") from None
        _check_syntax(texts[-1], "stdin" if path == "-" else path)
    return "\n---\n".join(texts)


def _print_table(rows: list[dict], columns: list[str], out: Callable[[str], None]) -> None:
    # A column is a field name, or "field:header"; an empty value shows as "-".
    keys = [c.split(":")[0] for c in columns]
    cells = [[c.split(":")[-1].upper().replace("_", " ") for c in columns]]
    for row in rows:
        cells.append([str(row[k]) if row.get(k) not in (None, "") else "-" for k in keys])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        out("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


# --- commands ----------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    settings = config.resolve(args.url, None)
    if not settings.url:
        raise CLIError("Give the server: `modeldeck login --url https://modeldeck.example.com …`.")
    client = Client(settings.url)
    if args.token:
        settings.token = args.token
        who = Client(settings.url, args.token)
        try:
            orgs = who.get("/api/v1/organizations/")
        except CLIError as exc:
            if exc.http_status == 401:  # not "run `modeldeck login`": that is what the user is doing
                raise CLIError(f"{settings.url} refused the token ({exc.detail.rstrip('.')}).", http_status=401) from None
            raise
        rows = orgs.get("results", orgs) if isinstance(orgs, dict) else orgs
        settings.organization = rows[0]["slug"] if rows else ""
        settings.username = ""
    else:
        try:
            username = args.username or input("Username: ")
            password = args.password if args.password is not None else getpass.getpass("Password: ")
        except EOFError:  # not a terminal (a script, CI): nothing to prompt
            print(file=sys.stderr)
            args.usage.error("no username or password to read (standard input is closed): give "
                             "--username and --password, or --token")  # fmt: skip
        body = {"username": username, "password": password, "name": f"modeldeck CLI on {socket.gethostname()}"[:100]}
        if args.organization:
            body["organization"] = args.organization
        response = client.request("POST", "/api/v1/auth/token/", json=body, ok=(201, 401))
        if response.status_code == 401:
            raise CLIError(f"Wrong username or password for {settings.url}.", http_status=401)
        data = response.json()
        settings.token, settings.organization, settings.username = data["token"], data["organization_slug"], data["username"]
    path = config.save(settings)
    who = f" as {settings.username}" if settings.username else ""
    out(f"Signed in to {settings.url}{who} (organization {settings.organization or '—'}); token saved in {path}.")
    return 0


def _apply(args: argparse.Namespace, out: Callable[[str], None], path: str) -> int:
    client = _client(args)
    body: dict[str, Any] = {"manifest": _read(args.filename), "dry_run": bool(args.dry_run)}
    response = client.request("POST", path, json=body, ok=(200, 400, 422))
    data = response.json()
    if "lines" not in data:  # the manifest itself was refused (not YAML, wrong apiVersion …)
        raise CLIError("; ".join(" ".join(v) if isinstance(v, list) else str(v) for v in data.values()))
    for line in data["lines"]:
        out(line)
    if data["errors"]:
        verb = "deleted" if path.endswith("delete/") else "applied"
        if args.dry_run:
            raise CLIError(f"{data['errors']} document(s) would not be {verb}; nothing was changed (dry run)")
        raise CLIError(f"{data['errors']} document(s) could not be {verb}")
    return 0


def cmd_apply(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    return _apply(args, out, "/api/v1/apply/")


def cmd_delete(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    return _apply(args, out, "/api/v1/apply/delete/")


def _find(client: Client, kind: str, ref: str) -> dict:
    path, _ = KINDS[kind]
    if ref.isdigit():
        try:
            return client.get(f"{path}{ref}/")
        except CLIError as exc:
            if exc.http_status == 404:
                raise CLIError(f"No {kind[:-1]} with id {ref}.") from None
            raise
    matches = [row for row in client.list_all(path, **_scope(client, kind)) if row.get("name") == ref]
    if not matches:
        raise CLIError(f"No {kind[:-1]} named {ref!r}.")
    if len(matches) > 1:
        raise CLIError(f"Several {kind} are named {ref!r} (ids {', '.join(str(m['id']) for m in matches)}); give the id.")
    return matches[0]


HEALTH_WORDS = {"healthy": "endpoint reachable", "unhealthy": "endpoint unreachable", "unknown": "endpoint not checked yet"}


def _status(row: dict) -> str:
    """A deployment's state as the console shows it; an external one's endpoint health beside
    "Running" (only then is it checked): "Running (endpoint unreachable)"."""
    state = str(row.get("state") or "")
    text = state.capitalize()
    if row.get("kind") == "external" and state == "running" and row.get("health"):
        text += f" ({HEALTH_WORDS.get(row['health'], 'endpoint ' + row['health'])})"
    return text


def cmd_get(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    path, columns = KINDS[args.kind]
    rows = [_find(client, args.kind, args.name)] if args.name else client.list_all(path, **_scope(client, args.kind))
    if args.output == "json":
        out(json.dumps(rows, indent=2, default=str))
    elif args.output == "yaml":
        out(yaml.safe_dump(rows, sort_keys=False).rstrip())
    else:
        if args.kind == "deployments":
            rows = [{**row, "status": _status(row)} for row in rows]
        _print_table(rows, columns, out)
    return 0


def cmd_describe(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    obj = _find(client, args.kind, args.name)
    out(yaml.safe_dump(obj, sort_keys=False).rstrip())
    if args.kind == "deployments":
        # In words, as the console's status card: "Running (endpoint unreachable: connection refused)".
        status = _status(obj)
        if obj.get("kind") == "external" and obj.get("health") == "unhealthy" and obj.get("health_detail"):
            status = status[:-1] + f": {obj['health_detail']})"
        out(f"status: {status}")
        events = client.get(f"/api/v1/deployments/{obj['id']}/events/")
        events = events.get("results", events) if isinstance(events, dict) else events
        out("events:")
        if not events:
            out("  (none)")
        for e in events[:20]:
            when = e.get("created_at") or e.get("time") or ""
            out(f"  {when}  {e.get('type') or e.get('level') or ''}  {e.get('reason') or ''}  {e.get('message') or ''}".rstrip())
    return 0


def cmd_logs(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    deployment = _find(client, "deployments", args.deployment)
    path = f"/api/v1/deployments/{deployment['id']}/logs/"
    seen: list[str] = []
    said_idle = False
    while True:
        response = client.request("GET", path, params={
            k: v for k, v in {"pod": args.pod, "container": args.container, "tail": args.tail,
                              "previous": "true" if args.previous else None}.items() if v is not None
        }, ok=(200, 409, 503))  # fmt: skip
        data = response.json()
        if response.status_code == 409 and data.get("deployment_state") == "deactivated":
            name = deployment["name"]
            raise CLIError(f"{name} is deactivated: it is scaled to zero and has no running pods, so there is "
                           f"no log to read. `modeldeck activate {args.deployment}` starts its pods again (its GPUs are "
                           "reserved again; the quota is checked).")  # fmt: skip
        if response.status_code == 409 and data.get("scaled_to_zero"):
            # Idle at zero: following waits for the pod the next request starts.
            if not args.follow:
                raise CLIError(data.get("detail") or "It is scaled to zero while idle.")
            if not said_idle:
                print(data.get("detail"), file=sys.stderr)
                said_idle = True
            time.sleep(args.interval)
            continue
        if response.status_code == 409:  # an external deployment: its pods are not ModelDeck's
            raise CLIError(f"{data.get('detail') or 'It runs no pods here.'} ModelDeck has no log of it: "
                           "read the logs where it runs.")  # fmt: skip
        if response.status_code == 503 and said_idle:  # woken: its pod is being created
            time.sleep(args.interval)
            continue
        if response.status_code == 503:
            raise CLIError(data.get("detail") or "The pool can't be read right now.")
        lines = data.get("lines", [])
        # Following polls the tail: print only what came after the last line already shown.
        start = 0
        if seen:
            for i in range(len(lines), 0, -1):
                if lines[:i] == seen[-i:]:
                    start = i
                    break
        for line in lines[start:]:
            out(line)
        seen = (seen + lines[start:])[-5000:]
        if not args.follow:
            return 0
        time.sleep(args.interval)


def cmd_logout(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    settings = config.load()
    settings.token = ""
    config.save(settings)
    config.forget_playground_keys()  # the short-lived keys `chat` got as this login
    out("Signed out: the token is gone from this machine (revoke it in the console to end it everywhere).")
    return 0


# --- operating a deployment: scale, deactivate, activate, rollback, history -------------------


def _deployment(client: Client, ref: str) -> dict:
    return _find(client, "deployments", ref)


def _action(client: Client, deployment: dict, action: str, body: dict | None = None) -> dict:
    return client.post(f"/api/v1/deployments/{deployment['id']}/{action}/", body or {}).json()


def _when(value: Any) -> str:
    """An API timestamp as "2026-12-01 07:40" (UTC), or "-"."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M")


def _replicas(lo: int, hi: int) -> str:
    return f"{lo} replica{'s' if lo != 1 else ''}" if lo == hi else f"{lo}–{hi} replicas"


def _scale_refused(args: argparse.Namespace, errors: Any) -> CLIError:
    """The server's refusal of min/max (a bound above its limit) said about the flag given."""
    if not isinstance(errors, dict) or not errors or not set(errors) <= {"min", "max"}:
        return CLIError(f"400: {body_text(errors)}", http_status=400)
    if args.replicas is not None:
        flag, value, field = "--replicas", args.replicas, "max" if "max" in errors else "min"
    else:
        given = [k for k in ("min", "max") if getattr(args, k) is not None]
        field = next((k for k in given if k in errors), given[0])
        flag, value = f"--{field}", getattr(args, field)
    messages = errors.get(field) or next(iter(errors.values()))
    message = " ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
    return CLIError(f"{flag} {value}: {message}", http_status=400)


def cmd_scale(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    if args.replicas is None and args.min is None and args.max is None:
        raise CLIError("Say how many: --replicas N, or --min and/or --max (the autoscaler's bounds).")
    if args.replicas is not None and (args.min is not None or args.max is not None):
        raise CLIError("Give either --replicas or --min/--max, not both.")
    # Said about the flag given: the API takes min and max and would name both.
    for flag, value, least in (("--replicas", args.replicas, 1), ("--min", args.min, 0), ("--max", args.max, 1)):
        if value is not None and value < least:
            hint = " (none: `modeldeck deactivate NAME`, or --min 0 to scale to zero when idle)" if flag != "--min" else ""
            raise CLIError(f"{flag} {value}: give a whole number of replicas, at least {least}{hint}.")
    client = _client(args)
    deployment = _deployment(client, args.name)
    if deployment.get("kind") == "external":
        raise CLIError(
            f"{deployment['name']} is an external endpoint: the model runs on your organization's own "
            "infrastructure, so ModelDeck has no replicas of it to scale. Scale it where it runs."
        )
    if args.replicas is not None:
        lo = hi = args.replicas
    else:
        # One bound given: the other keeps its value (the API takes both), moved only as far as
        # the given one needs (--min 5 over a maximum of 3 makes it 5).
        current = (deployment.get("spec") or {}).get("replicas") or {}
        lo = args.min if args.min is not None else current.get("min", 1)
        hi = args.max if args.max is not None else max(current.get("max", 1), lo, 1)
        if args.min is None:
            lo = min(lo, hi)
    response = client.post(f"/api/v1/deployments/{deployment['id']}/scale/", {"min": lo, "max": hi}, ok=(200, 400))
    data = response.json()
    if response.status_code == 400:
        raise _scale_refused(args, data)
    out(f"deployment/{data['name']} scaled to {_replicas(lo, hi)} (revision {data.get('current_revision')}).")
    return 0


def cmd_deactivate(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    data = _action(client, _deployment(client, args.name), "deactivate")
    out(f"deployment/{data['name']} deactivated: scaled to zero, its GPUs released (state {_status(data)}).")
    return 0


def cmd_activate(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    data = _action(client, _deployment(client, args.name), "activate")
    out(f"deployment/{data['name']} activated: scaling back up (state {_status(data)}).")
    return 0


def cmd_retry(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    data = _action(client, _deployment(client, args.name), "retry")
    out(f"deployment/{data['name']} retried: revision {data.get('current_revision')} is applied again (state {_status(data)}).")
    return 0


def _revisions(client: Client, deployment: dict) -> list[dict]:
    return client.list_all(f"/api/v1/deployments/{deployment['id']}/revisions/")


def cmd_rollback(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    deployment = _deployment(client, args.name)
    target = args.to
    if target is None:
        # As `kubectl rollout undo`: the revision before the current one.
        current = deployment.get("current_revision") or 0
        earlier = [r["number"] for r in _revisions(client, deployment) if r["number"] < current]
        if not earlier:
            raise CLIError(f"{deployment['name']} has no revision before revision {current}: nothing to roll back to.")
        target = max(earlier)
    data = _action(client, deployment, "rollback", {"revision": target, "update_strategy": args.strategy})
    name, number = data["name"], data.get("current_revision")
    if number == deployment.get("current_revision"):
        out(f"deployment/{name}: revision {number} already has revision {target}'s spec; nothing changed.")
        return 0
    # What the server did, not what --strategy asked: a rollback that changes only the replicas
    # scales in place, one back to the serving pods stops the rollout; the new revision's reason
    # says which ("Rollback to revision 2 (scaled in place)"), the state what runs meanwhile.
    page = client.get(f"/api/v1/deployments/{data['id']}/revisions/")
    rows = page.get("results", []) if isinstance(page, dict) else page
    reason = next((r.get("reason") or "" for r in rows if r.get("number") == number), "")
    how = re.search(r"\(([^()]*)\)$", reason)
    line = f"deployment/{name} rolled back to revision {target} as revision {number}"
    line += f" ({how[1]})." if how and how[1] != "recreate" else "."
    if data.get("state") == "deploying" and data.get("state_reason"):
        line += f" {data['state_reason']}"  # "Rolling out revision 8; revision 7 keeps serving until it is ready."
    out(line)
    if data.get("serving_revision") != number:
        out(f"`modeldeck history {name}` shows which revision serves.")
    return 0


def cmd_history(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    deployment = _deployment(client, args.name)
    revisions = _revisions(client, deployment)
    if args.output == "json":
        out(json.dumps(revisions, indent=2, default=str))
        return 0
    rows = []
    for r in revisions:
        marks = [m for m, n in (("current", deployment.get("current_revision")),
                                ("serving", deployment.get("serving_revision"))) if r["number"] == n]  # fmt: skip
        rows.append({"revision": r["number"], "created": _when(r.get("created_at")), "by": r.get("created_by"),
                     "summary": r.get("reason"), "serves": ", ".join(marks)})  # fmt: skip
    _print_table(rows, ["revision", "created", "by", "summary", "serves"], out)
    return 0


# --- API keys --------------------------------------------------------------------------------

KEYS_PATH = "/api/v1/keys/"
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _expiry(value: str | None) -> str | None:
    """--expires as the API's datetime: 30d, 12h, 90m, 2w from now; a date (end of that day, UTC);
    or an ISO 8601 datetime. None: never."""
    if value is None or value.lower() in ("never", "none", ""):
        return None
    relative = _RELATIVE.match(value.strip().lower())
    if relative:
        moment = datetime.now(UTC) + timedelta(**{_UNITS[relative[2]]: int(relative[1])})
        return moment.isoformat(timespec="seconds")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CLIError(f"--expires {value!r}: give 30d, 12h, 2w, a date (2027-01-31) or a datetime.") from None
    if len(value.strip()) == 10:  # a bare date: valid through that day
        moment = moment.replace(hour=23, minute=59, second=59)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="seconds")


def _deployment_names(client: Client) -> dict[int, str]:
    return {d["id"]: d["name"] for d in client.list_all("/api/v1/deployments/")}


def cmd_keys_list(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    keys = client.list_all(KEYS_PATH)
    if args.output == "json":
        out(json.dumps(keys, indent=2, default=str))
        return 0
    names = _deployment_names(client) if any(k.get("deployments") for k in keys) else {}
    rows = [{**k, "deployments": ", ".join(names.get(d, str(d)) for d in k.get("deployments") or []) or "all",
             "created": _when(k.get("created_at")), "expires": _when(k.get("expires_at")) if k.get("expires_at") else "never",
             "last_used": _when(k.get("last_used_at"))}
            for k in keys]  # fmt: skip
    _print_table(rows, ["id", "name", "prefix", "scope", "state", "deployments", "created", "expires", "last_used"], out)
    return 0


def cmd_keys_create(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    body: dict[str, Any] = {"name": args.name, "scope": args.scope}
    expires = _expiry(args.expires)
    if expires:
        body["expires_at"] = expires
    refs = [ref.strip() for value in args.deployments or [] for ref in value.split(",") if ref.strip()]
    if refs:
        body["deployments"] = [_deployment(client, ref)["id"] for ref in refs]
    key = client.post(KEYS_PATH, body, ok=(201,)).json()
    if args.output == "json":
        out(json.dumps(key, indent=2, default=str))
        return 0
    limited = f", limited to {', '.join(refs)}" if refs else ""
    expiry = f", expires {_when(key.get('expires_at'))} UTC" if key.get("expires_at") else ", never expires"
    out(f"API key {key['name']!r} created (id {key['id']}, prefix {key['prefix']}, scope {key['scope']}{expiry}{limited}).")
    out("Its secret is shown this once and can't be shown again — store it now:")
    out("")
    out(f"    {key['secret']}")
    out("")
    if key["scope"] == "gateway":
        out("Use it as the gateway's Bearer key, e.g. MODELDECK_API_KEY for `modeldeck chat`.")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    ref = args.key.strip()
    if ref.isdigit():
        key_id = int(ref)
    else:
        # The prefix as listed (mdk_ + 8 characters), or the whole secret pasted.
        matches = [k for k in client.list_all(KEYS_PATH) if k["prefix"] == ref or ref.startswith(k["prefix"])]
        live = [k for k in matches if k.get("state") != "revoked"] or matches
        if not live:
            raise CLIError(f"No API key of yours with prefix {ref!r} (`modeldeck keys list` shows them).")
        if len(live) > 1:
            raise CLIError(f"Several keys have the prefix {ref!r} (ids {', '.join(str(k['id']) for k in live)}); give the id.")
        key_id = live[0]["id"]
    try:
        key = client.post(f"{KEYS_PATH}{key_id}/revoke/", {"reason": args.reason} if args.reason else {}).json()
    except CLIError as exc:
        if exc.http_status == 404:
            raise CLIError(f"No API key with id {key_id} that you can see.") from None
        raise
    out(f"API key {key['name']!r} ({key['prefix']}) revoked: the gateway refuses it from now on.")
    return 0


# --- usage -----------------------------------------------------------------------------------

RANGE_WORDS = {"1h": "the last hour", "24h": "the last 24 hours", "7d": "the last 7 days", "30d": "the last 30 days"}


def _money(value: Any, currency: str) -> str:
    """A cost as the console's Usage pages show it: "0.0125 USD", "2.50 USD", "0.0000052 USD"
    (the server sends the rows' sums as "0.01250000" and the total as "0.0125")."""
    return f"{money_text(value or 0)} {currency}"


def cmd_usage(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    summary = client.get("/api/v1/usage/summary/", range=args.range, scope="keys")
    if args.output == "json":
        out(json.dumps({"range": summary["range"], "totals": summary["totals"],
                        "by_deployment": summary["by_deployment"]}, indent=2, default=str))  # fmt: skip
        return 0
    totals = summary["totals"]
    currency = totals.get("currency") or "USD"
    out(f"Calls with your API keys over {RANGE_WORDS.get(summary['range'], summary['range'])}:")
    rows = [{**r, "deployment": r["name"], "cost": _money(r["cost"], currency)} for r in summary["by_deployment"]]
    if not rows:
        out("(no calls)")
        return 0
    rows.append({"deployment": "TOTAL", "requests": totals["requests"], "prompt_tokens": totals["prompt_tokens"],
                 "completion_tokens": totals["completion_tokens"], "cost": _money(totals["cost"], currency)})  # fmt: skip
    _print_table(rows, ["deployment", "requests", "prompt_tokens", "completion_tokens", "cost"], out)
    return 0


# --- chat through the gateway ----------------------------------------------------------------


def _gateway_error(response: httpx.Response, model: str, name: str) -> CLIError:
    try:
        error = response.json().get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
    except ValueError:
        message = response.text.strip()[:300]
    message = message or response.reason_phrase
    code = response.status_code
    if code == 401:
        return CLIError(f"The gateway refused the API key: {message}", http_status=code)
    if code == 403:
        return CLIError(f"You lack the permission to call {name}: {message}", http_status=code)
    if code == 404:
        return CLIError(f"No deployment named {name} on the gateway (model {model!r}): {message}", http_status=code)
    return CLIError(f"The gateway answered {code}: {message}", http_status=code)


# Signed in without a gateway key, `chat` gets the console playground's key: 15 minutes, this
# deployment only, and each one revokes the one before. Kept while it has more than this left, so
# that chats in a row reuse it rather than mint (and revoke) a key each.
PLAYGROUND_KEY_MIN_LEFT = timedelta(minutes=1)


def _playground_key(client: Client, deployment: dict, token: str, *, fresh: bool = False) -> tuple[str, bool]:
    """A short-lived gateway key for `deployment`: the cached one unless `fresh`, else a new one
    from POST /api/v1/deployments/{id}/playground-key/. Returns the key and whether it was cached."""
    slot = config.key_slot(client.url, deployment["id"], token)
    if not fresh:
        cached = config.cached_playground_key(slot, min_left=PLAYGROUND_KEY_MIN_LEFT)
        if cached:
            return cached, True
    try:
        issued = client.post(f"/api/v1/deployments/{deployment['id']}/playground-key/", {}, ok=(201,)).json()
    except CLIError as exc:
        if exc.http_status == 403:
            raise CLIError(f"You lack the permission to get a gateway key for {deployment['name']}: {exc.detail} "
                           "(a gateway key you were given works: --api-key or MODELDECK_API_KEY).",
                           http_status=403, detail=exc.detail) from None  # fmt: skip
        raise
    config.remember_playground_key(slot, issued["api_key"], str(issued["expires_at"]))
    return issued["api_key"], False


def _stream_chat(url: str, body: dict, api_key: str, timeout: float, name: str) -> None:
    """POST one streamed chat completion and write the answer to stdout as it comes. A refusal
    raises before anything is written (the caller may retry it)."""
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream", "User-Agent": "modeldeck-cli"}
    gateway = url.removesuffix("/v1/chat/completions")
    wrote = False
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0)) as http, \
                http.stream("POST", url, json=body, headers=headers) as response:  # fmt: skip
            if response.status_code != 200:
                response.read()
                raise _gateway_error(response, body["model"], name)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                if chunk.get("error"):  # an error after the stream began
                    error = chunk["error"]
                    raise CLIError(f"The answer broke off: {error.get('message') if isinstance(error, dict) else error}")
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                        wrote = True
    except httpx.HTTPError as exc:
        raise unreachable(gateway, exc) from None
    finally:
        if wrote:
            sys.stdout.write("\n")
            sys.stdout.flush()


def cmd_chat(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    api_key = args.api_key or os.environ.get("MODELDECK_API_KEY", "")
    settings = config.resolve(args.url, args.token)
    signed_in = bool(settings.token and settings.url)
    if not api_key and not signed_in:
        raise CLIError("No gateway key: give --api-key or set MODELDECK_API_KEY (`modeldeck keys create NAME` makes "
                       "one), or `modeldeck login` first: signed in, chat gets a short-lived key by itself.")  # fmt: skip
    model, served_at, client, deployment = args.name, "", None, None
    if signed_in:
        # Signed in: NAME is the deployment (name or id), called by its served model name at the
        # gateway address the server gives for it.
        client = Client(settings.url, settings.token)
        deployment = _deployment(client, args.name)
        model, served_at = deployment["served_model_name"], deployment.get("gateway_url") or ""
    # Not signed in, the gateway answers under /v1 of ModelDeck's own address unless it has one of
    # its own (MODELDECK_GATEWAY_URL on the server): it can be given.
    gateway = (args.gateway_url or os.environ.get("MODELDECK_GATEWAY_URL") or served_at or settings.url).rstrip("/")
    if not gateway:
        raise CLIError("No gateway URL: give --gateway-url, set MODELDECK_GATEWAY_URL, or `modeldeck login` first.")
    gateway = gateway.removesuffix("/v1")
    if not gateway.startswith(("http://", "https://")):
        raise CLIError(f"{gateway!r} is not an http(s) URL.")
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        body["temperature"] = args.temperature
    url = f"{gateway}/v1/chat/completions"
    cached = False
    if not api_key:
        assert client is not None and deployment is not None  # signed in
        api_key, cached = _playground_key(client, deployment, settings.token)
    try:
        _stream_chat(url, body, api_key, args.timeout, args.name)
    except CLIError as exc:
        if not (cached and exc.http_status == 401):
            raise
        # The kept key was revoked (a newer one was issued elsewhere, e.g. the console's
        # playground) or has expired by the server's clock: one new key, one more try.
        api_key, _ = _playground_key(client, deployment, settings.token, fresh=True)
        _stream_chat(url, body, api_key, args.timeout, args.name)
    return 0


# --- argument parsing ------------------------------------------------------------------------


class _CommandParser(argparse.ArgumentParser):
    """A command's parser refuses what it doesn't know itself, with its own usage: argparse left
    that to the top parser, so `modeldeck scale chat 3` printed `usage: modeldeck [-h] COMMAND`."""

    hint = ""  # said after the refusal, e.g. how this command takes a count

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({self.hint})" if self.hint else ""))
        return parsed, extras


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="ModelDeck's address (default: MODELDECK_URL, then the saved login).")
    common.add_argument("--token", help="A REST API key (default: MODELDECK_TOKEN, then the saved login).")

    p = argparse.ArgumentParser(prog="modeldeck", description="Deploy and manage models on ModelDeck from anywhere (REST API).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)

    login = sub.add_parser("login", parents=[common], help="sign in and save the token")
    login.add_argument("--username", "-u")
    login.add_argument("--password", "-p", help="(prompted when left out)")
    login.add_argument("--organization", help="slug or id (default: your first organization)")
    login.set_defaults(run=cmd_login, usage=login)

    sub.add_parser("logout", help="forget the saved token").set_defaults(run=cmd_logout)

    for name, run, what in (("apply", cmd_apply, "create or update what manifests describe"),
                            ("delete", cmd_delete, "delete what manifests name")):  # fmt: skip
        cmd = sub.add_parser(name, parents=[common], help=what)
        cmd.add_argument("-f", "--filename", action="append", required=True, help="YAML file (- for stdin); repeatable")
        cmd.add_argument("--dry-run", action="store_true", help="show what would change (the diff); change nothing")
        cmd.set_defaults(run=run)

    get = sub.add_parser("get", parents=[common], help="list deployments, models or pools")
    get.add_argument("kind", type=_kind, help="deployments | models | pools")
    get.add_argument("name", nargs="?", help="one of them, by name or id")
    get.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    get.set_defaults(run=cmd_get)

    describe = sub.add_parser("describe", parents=[common], help="everything about one deployment, model or pool")
    describe.add_argument("kind", type=_kind)
    describe.add_argument("name", help="name or id")
    describe.set_defaults(run=cmd_describe)

    logs = sub.add_parser("logs", parents=[common], help="a deployment's engine log (from its pods)")
    logs.add_argument("deployment", help="name or id")
    logs.add_argument("--pod")
    logs.add_argument("--container", "-c")
    logs.add_argument("--tail", type=int, default=None)
    logs.add_argument("--previous", action="store_true", help="the container's previous run")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    logs.set_defaults(run=cmd_logs)

    scale = sub.add_parser(
        "scale", parents=[common], help="set a deployment's replicas (fixed, or the autoscaler's bounds)",
        description="Scale in place (a new revision, no rollout of new pods). --replicas N fixes the count; "
                    "--min/--max set the bounds the autoscaler keeps to (the one left out keeps its value).",
    )  # fmt: skip
    scale.add_argument("name", help="deployment name or id")
    scale.add_argument("--replicas", type=int, metavar="N", help="run exactly N replicas (min = max = N)")
    scale.add_argument("--min", type=int, metavar="N", help="the autoscaler's minimum (0: scale to zero when idle)")
    scale.add_argument("--max", type=int, metavar="N", help="the autoscaler's maximum")
    scale.set_defaults(run=cmd_scale)
    scale.hint = "give the count as --replicas N, or the autoscaler's bounds as --min N --max N"

    deactivate = sub.add_parser("deactivate", parents=[common], help="scale a deployment to zero and release its GPUs",
                                description="Scale to zero and give the GPUs back to the quota; the spec stays, "
                                            "`modeldeck activate` brings it back.")  # fmt: skip
    deactivate.add_argument("name", help="deployment name or id")
    deactivate.set_defaults(run=cmd_deactivate)

    activate = sub.add_parser("activate", parents=[common], help="bring a deactivated deployment back",
                              description="Reserve the GPUs again (the quota is checked) and scale back up.")
    activate.add_argument("name", help="deployment name or id")
    activate.set_defaults(run=cmd_activate)

    retry = sub.add_parser("retry", parents=[common], help="apply a failed deployment's revision again",
                           description="After a failure's cause was fixed outside the spec (the pool, capacity, "
                                       "the image): apply the current revision again, as it is.")  # fmt: skip
    retry.add_argument("name", help="deployment name or id")
    retry.set_defaults(run=cmd_retry)

    rollback = sub.add_parser(
        "rollback", parents=[common], help="re-apply an earlier revision (default: the previous one)",
        description="Re-apply an earlier revision's spec as a new revision. A change to the pods rolls out "
                    "blue-green (the serving revision answers until the new one is ready) or, with --strategy "
                    "recreate, stops them first; a change of replicas only scales in place. The command prints "
                    "what the server did. `modeldeck history NAME` lists the revisions.",
    )  # fmt: skip
    rollback.add_argument("name", help="deployment name or id")
    rollback.add_argument("--to", type=int, metavar="REVISION", help="revision number (default: the one before the current)")
    rollback.add_argument("--strategy", choices=["blue_green", "recreate"], default="blue_green",
                          help="blue_green (default) or recreate (stop first: no extra GPUs, refused requests meanwhile)")
    rollback.set_defaults(run=cmd_rollback)

    history = sub.add_parser("history", parents=[common], help="a deployment's revisions, newest first",
                             description="Revisions: number, when, by whom, what changed, and which is current "
                                         "(the spec asked for) and serving (the one the gateway sends requests to).")  # fmt: skip
    history.add_argument("name", help="deployment name or id")
    history.add_argument("-o", "--output", choices=["table", "json"], default="table")
    history.set_defaults(run=cmd_history)

    keys = sub.add_parser("keys", help="your API keys: list, create, revoke",
                          description="API keys of your organization: gateway keys call models; REST keys "
                                      "manage ModelDeck as you (what `modeldeck login` saves).")  # fmt: skip
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_list = keys_sub.add_parser("list", parents=[common], help="your keys (never their secrets)")
    keys_list.add_argument("-o", "--output", choices=["table", "json"], default="table")
    keys_list.set_defaults(run=cmd_keys_list)
    keys_create = keys_sub.add_parser("create", parents=[common], help="a new key; its secret is printed once",
                                      description="Create a key. Its secret is printed this once: ModelDeck "
                                                  "stores only a hash and can't show it again.")  # fmt: skip
    keys_create.add_argument("name", help="what the key is for, e.g. the application that uses it")
    keys_create.add_argument("--expires", metavar="WHEN",
                             help="30d, 12h, 2w, a date (2027-01-31: through that day, UTC) or an ISO datetime; "
                                  "default: never")  # fmt: skip
    keys_create.add_argument("--deployments", action="append", metavar="NAMES",
                             help="limit the key to these deployments (names or ids, comma-separated; repeatable); "
                                  "default: every one you may call")  # fmt: skip
    keys_create.add_argument("--scope", choices=["gateway", "rest"], default="gateway",
                             help="gateway (default): call models; rest: the REST API as you")
    keys_create.add_argument("-o", "--output", choices=["text", "json"], default="text")
    keys_create.set_defaults(run=cmd_keys_create)
    keys_revoke = keys_sub.add_parser("revoke", parents=[common], help="revoke a key (the gateway refuses it at once)")
    keys_revoke.add_argument("key", metavar="PREFIX_OR_ID", help="the key's id or prefix as `keys list` shows it")
    keys_revoke.add_argument("--reason", help="kept with the key, for the audit trail")
    keys_revoke.set_defaults(run=cmd_keys_revoke)

    usage = sub.add_parser("usage", parents=[common], help="your calls per deployment: requests, tokens, cost",
                           description="Totals per deployment of the calls made with your API keys.")
    usage.add_argument("--range", choices=list(RANGE_WORDS), default="24h", help="default 24h")
    usage.add_argument("-o", "--output", choices=["table", "json"], default="table")
    usage.set_defaults(run=cmd_usage)

    chat = sub.add_parser(
        "chat", parents=[common], help="one chat completion through the gateway, streamed to stdout",
        description="Send one prompt to a deployment through the OpenAI-compatible gateway and print the "
                    "answer as it streams. Signed in, NAME is a deployment (name or id) and is called by its "
                    "served model name; without --api-key or MODELDECK_API_KEY, chat gets a short-lived gateway "
                    "key for that deployment (as the console's playground: 15 minutes, this deployment only), "
                    "keeps it in the config folder (mode 0600) and reuses it while it is valid. Without a "
                    "login, a gateway key is needed and NAME is the served model name itself.",
    )  # fmt: skip
    chat.add_argument("name", help="deployment name or id (or, without a login, its served model name)")
    chat.add_argument("prompt", help="the user message (- reads it from stdin)")
    chat.add_argument("--api-key", help="a gateway key (default: MODELDECK_API_KEY; signed in, without one: a "
                                        "short-lived key for the deployment)")  # fmt: skip
    chat.add_argument("--gateway-url", help="the gateway's address (default: MODELDECK_GATEWAY_URL, else the one the server gives for the deployment, else ModelDeck's URL)")
    chat.add_argument("--system", help="a system message sent before the prompt")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer (default 300)")
    chat.set_defaults(run=cmd_chat)
    return p


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] | None = None) -> int:
    args = parser().parse_args(argv)
    for name in ("url", "token"):
        if not hasattr(args, name):
            setattr(args, name, None)
    write = out or (lambda line: print(line, flush=True))
    try:
        return args.run(args, write)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `modeldeck history x | head`: the reader has gone; no traceback, as other Unix tools.
        # stdout is pointed at devnull so Python's flush at exit doesn't raise it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
