"""The `modeldeck` command: login, apply -f, delete -f, get, describe, logs — over the REST API."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from modeldeck_cli import config
from modeldeck_cli.client import Client, CLIError

KINDS = {
    # name (and aliases) → (collection path, table columns)
    "deployments": ("/api/v1/deployments/", ["id", "name", "state", "served_model_name", "current_revision", "gpus_held", "pool_name:pool"]),
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
    return Client(settings.url, settings.token)


def _read(paths: Sequence[str]) -> str:
    texts = []
    for path in paths:
        if path == "-":
            texts.append(sys.stdin.read())
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                texts.append(fh.read())
        except OSError as exc:
            raise CLIError(f"can't read {path}: {exc.strerror}") from None
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
        orgs = who.get("/api/v1/organizations/")
        rows = orgs.get("results", orgs) if isinstance(orgs, dict) else orgs
        settings.organization = rows[0]["slug"] if rows else ""
        settings.username = ""
    else:
        username = args.username or input("Username: ")
        password = args.password if args.password is not None else getpass.getpass("Password: ")
        body = {"username": username, "password": password, "name": f"modeldeck CLI on {socket.gethostname()}"[:100]}
        if args.organization:
            body["organization"] = args.organization
        response = client.request("POST", "/api/v1/auth/token/", json=body, ok=(201,))
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
        raise CLIError(f"{data['errors']} document(s) could not be {'deleted' if path.endswith('delete/') else 'applied'}")
    return 0


def cmd_apply(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    return _apply(args, out, "/api/v1/apply/")


def cmd_delete(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    return _apply(args, out, "/api/v1/apply/delete/")


def _find(client: Client, kind: str, ref: str) -> dict:
    path, _ = KINDS[kind]
    if ref.isdigit():
        return client.get(f"{path}{ref}/")
    matches = [row for row in client.list_all(path) if row.get("name") == ref]
    if not matches:
        raise CLIError(f"No {kind[:-1]} named {ref!r}.")
    if len(matches) > 1:
        raise CLIError(f"Several {kind} are named {ref!r} (ids {', '.join(str(m['id']) for m in matches)}); give the id.")
    return matches[0]


def cmd_get(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    path, columns = KINDS[args.kind]
    rows = [_find(client, args.kind, args.name)] if args.name else client.list_all(path)
    if args.output == "json":
        out(json.dumps(rows, indent=2, default=str))
    elif args.output == "yaml":
        out(yaml.safe_dump(rows, sort_keys=False).rstrip())
    else:
        _print_table(rows, columns, out)
    return 0


def cmd_describe(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    client = _client(args)
    obj = _find(client, args.kind, args.name)
    out(yaml.safe_dump(obj, sort_keys=False).rstrip())
    if args.kind == "deployments":
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
    while True:
        response = client.request("GET", path, params={
            k: v for k, v in {"pod": args.pod, "container": args.container, "tail": args.tail,
                              "previous": "true" if args.previous else None}.items() if v is not None
        }, ok=(200, 503))  # fmt: skip
        data = response.json()
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
    out("Signed out: the token is gone from this machine (revoke it in the console to end it everywhere).")
    return 0


# --- argument parsing ------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="ModelDeck's address (default: MODELDECK_URL, then the saved login).")
    common.add_argument("--token", help="A REST API key (default: MODELDECK_TOKEN, then the saved login).")

    p = argparse.ArgumentParser(prog="modeldeck", description="Deploy and manage models on ModelDeck from anywhere (REST API).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = sub.add_parser("login", parents=[common], help="sign in and save the token")
    login.add_argument("--username", "-u")
    login.add_argument("--password", "-p", help="(prompted when left out)")
    login.add_argument("--organization", help="slug or id (default: your first organization)")
    login.set_defaults(run=cmd_login)

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
