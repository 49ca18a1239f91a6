"""A local NGC-shaped HTTP server answering from a snapshot of NIM images: for the offline demo and tests.

It answers the NGC endpoints `catalog.ngc` calls, in NGC's JSON shapes:

- `GET /v2/search/catalog/resources/CONTAINER?q={"query": ..., "filters": [...], "page": n, "pageSize": n}`
  — the public catalog search (results grouped by resource type, attributes as key/value lists);
- `GET /token?service=ngc` — the authn token exchange for a legacy API key
  (`Authorization: ApiKey <key>` or Basic `$oauthtoken:<key>`); served on the same port, so point
  both the API and the authn URL at this server;
- `POST /v3/keys/get-caller-info` — who a personal key (`nvapi-...`) belongs to;
- `GET /v2/org/{org}/team/{team}/repos/{name}` — one image's details and tags (needs a Bearer
  token: a personal key or an exchanged token), 401/403/404 with NGC's `requestStatus` body;
- `GET /v2/org/{org}/team/{team}/repos/{name}/profiles?tag=<tag>` — the image's NIM model
  profiles (id, name, manifest tags) from `snapshot/ngc_nim_profiles.json`. NGC has no such
  route (the manifest is inside the image, printed by `list-model-profiles`); this is ModelDeck's
  own, so the offline flow can offer profiles; 404 where no manifest was recorded.

Test hooks as in `sandbox.offline_hub`: `keys` (allow-list), `mode = "error" | "stall"`, `requests`.

    python -m sandbox.offline_ngc --port 8095
    MODELDECK_NGC_API_URL=http://127.0.0.1:8095
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.offline_hub import SNAPSHOT_DIR, StubHandler, StubServer

NGC_SNAPSHOT = SNAPSHOT_DIR / "ngc_nim.json"
NGC_PROFILES = SNAPSHOT_DIR / "ngc_nim_profiles.json"


@dataclass(frozen=True)
class NgcKeyGrant:
    """An API key on the allow-list: its org, and whether it is entitled to pull NIM images."""

    org: str = "modeldeck-demo"
    user: str = "demo@example.invalid"
    nim_entitled: bool = True

    @staticmethod
    def kind_of(key: str) -> str:
        # NGC personal keys start with nvapi-; older "legacy" API keys are opaque base64.
        return "personal" if key.startswith("nvapi-") else "legacy"


def load_ngc_snapshot(path: Path = NGC_SNAPSHOT) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["images"]


def load_ngc_profiles(path: Path = NGC_PROFILES) -> dict[str, list[dict[str, Any]]]:
    return json.loads(path.read_text())["images"]


def _status(code: str, description: str) -> dict[str, Any]:
    return {
        "requestStatus": {
            "statusCode": code,
            "statusDescription": description,
            "requestId": secrets.token_hex(8),
        }
    }


class NgcHandler(StubHandler):
    stub: ClassVar[OfflineNgc]

    def route(self) -> None:
        parts = urlsplit(self.path)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        query = parse_qs(parts.query, keep_blank_values=True)
        match (self.command, segments):
            case ("GET", ["v2", "search", "catalog", "resources", "CONTAINER"]):
                self.search(query)
            case ("GET", ["token"]):
                self.token()
            case ("POST", ["v3", "keys", "get-caller-info"]):
                self.caller_info()
            case ("GET", ["v2", "org", org, "team", team, "repos", name, "profiles"]):
                self.profiles(org, team, name, (query.get("tag") or [""])[0])
            case ("GET", ["v2", "org", org, "repos", name, "profiles"]):
                self.profiles(org, None, name, (query.get("tag") or [""])[0])
            case ("GET", ["v2", "org", org, "team", team, "repos", name]):
                self.repo(org, team, name)
            case ("GET", ["v2", "org", org, "repos", name]):
                self.repo(org, None, name)
            case _:
                self.send_json(404, _status("NOT_FOUND", "Resource not found"))

    # --- auth --------------------------------------------------------------------------

    def _key_from_authn_header(self) -> str | None:
        value = self.headers.get("Authorization", "")
        scheme, _, credential = value.partition(" ")
        if scheme.lower() == "apikey":
            return credential.strip() or None
        if scheme.lower() == "basic":
            try:
                user, _, key = base64.b64decode(credential.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return key if user == "$oauthtoken" else None
        return None

    def _grant_for_bearer(self) -> NgcKeyGrant | None:
        token = self.bearer_token()
        if not token:
            return None
        return (
            self.stub.keys.get(token) if token.startswith("nvapi-") else self.stub.issued.get(token)
        )

    def token(self) -> None:
        key = self._key_from_authn_header()
        grant = self.stub.keys.get(key) if key else None
        if grant is None:
            self.send_json(
                401, {"error": "invalid_credentials", "error_description": "Invalid API key"}
            )
            return
        token = "ngc-" + secrets.token_urlsafe(24)
        self.stub.issued[token] = grant
        self.send_json(200, {"token": token, "expires_in": 3600})

    def caller_info(self) -> None:
        form = parse_qs(self.body.decode(errors="replace"))
        key = (form.get("credentials") or [None])[0] or self.bearer_token()
        grant = self.stub.keys.get(key) if key else None
        if grant is None:
            self.send_json(401, _status("UNAUTHORIZED", "Invalid credentials"))
            return
        self.send_json(
            200,
            {
                "requestStatus": {"statusCode": "SUCCESS"},
                "type": "PERSONAL_KEY"
                if NgcKeyGrant.kind_of(key or "") == "personal"
                else "API_KEY",
                "orgName": grant.org,
                "products": [{"name": "nv-ai-enterprise"}] if grant.nim_entitled else [],
                "user": {"email": grant.user},
            },
        )

    # --- catalog ---------------------------------------------------------------------

    def search(self, query: dict[str, list[str]]) -> None:
        try:
            q = json.loads((query.get("q") or ["{}"])[0])
            if not isinstance(q, dict):
                raise ValueError
            page, page_size = int(q.get("page", 0)), int(q.get("pageSize", 25))
        except ValueError:
            self.send_json(
                400, {"title": "Bad Request", "status": 400, "detail": "q must be a JSON object"}
            )
            return
        text = str(q.get("query") or "*:*").strip()
        filters = {
            f.get("field"): f.get("value") for f in q.get("filters") or [] if isinstance(f, dict)
        }
        if ":" in text and text != "*:*":
            # "orgName:nim" style: a field query, as the odh and NIM operator clients send.
            field, _, value = text.partition(":")
            filters[field] = value
            text = "*:*"
        images = self.stub.images
        if org := filters.get("orgName"):
            images = [i for i in images if i["orgName"] == org]
        if team := filters.get("teamName"):
            images = [i for i in images if i["teamName"] == team]
        if text != "*:*":
            needle = text.lower()
            images = [
                i
                for i in images
                if needle in i["name"].lower()
                or needle in i["displayName"].lower()
                or needle in i["shortDescription"].lower()
            ]
        images = sorted(images, key=lambda i: (-i.get("weightPopular", 0), i["resourceId"]))
        page_size = max(1, min(page_size, 1000))
        chunk = images[page * page_size : (page + 1) * page_size]
        resources = [self.resource(i) for i in chunk]
        total_pages = max(1, -(-len(images) // page_size))
        self.send_json(
            200,
            {
                "resultTotal": len(images),
                "resultPageTotal": total_pages,
                "params": {
                    "page": page,
                    "pageSize": page_size,
                    "query": text,
                    "filters": [{"field": k, "value": v} for k, v in filters.items()]
                    + [{"field": "resourceType", "value": "container"}],
                    "groupBy": "resourceType",
                },
                "results": [
                    {"totalCount": len(images), "groupValue": "CONTAINER", "resources": resources}
                ]
                if resources
                else [],
            },
        )

    @staticmethod
    def resource(image: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "orgName": image["orgName"],
            "teamName": image["teamName"],
            "resourceId": image["resourceId"],
            "name": image["name"],
            "displayName": image["displayName"],
            "description": image["shortDescription"],
            "resourceType": "CONTAINER",
            "dateCreated": image["dateCreated"],
            "dateModified": image["updatedDate"],
            "weightPopular": image.get("weightPopular", 0),
            "labels": [
                {"key": "general", "values": image.get("labels", [])},
                {"key": "publisher", "values": [image.get("publisher", "NVIDIA")]},
            ],
            "attributes": [
                {"key": "latestTag", "value": image["latestTag"]},
                {"key": "size", "value": str(image["latestImageSize"])},
                {"key": "latestTagPushedDate", "value": image["updatedDate"]},
            ],
        }

    def repo(self, org: str, team: str | None, name: str) -> None:
        grant = self._grant_for_bearer()
        if grant is None:
            self.send_json(401, _status("UNAUTHORIZED", "Not Authenticated"))
            return
        resource_id = "/".join(p for p in (org, team, name) if p)
        image = next((i for i in self.stub.images if i["resourceId"] == resource_id), None)
        if image is None:
            self.send_json(404, _status("NOT_FOUND", f"Repository {resource_id} not found"))
            return
        if not grant.nim_entitled:
            self.send_json(403, _status("FORBIDDEN", "Access Denied"))
            return
        body = {
            k: v
            for k, v in image.items()
            if k not in ("resourceId", "orgName", "teamName", "dateCreated")
        }
        body["namespace"] = f"{org}/{team}" if team else org
        self.send_json(200, body)


    def profiles(self, org: str, team: str | None, name: str, tag: str) -> None:
        grant = self._grant_for_bearer()
        if grant is None:
            self.send_json(401, _status("UNAUTHORIZED", "Not Authenticated"))
            return
        resource_id = "/".join(p for p in (org, team, name) if p)
        image = next((i for i in self.stub.images if i["resourceId"] == resource_id), None)
        if image is None or (tag and tag not in image.get("tags", [])):
            self.send_json(404, _status("NOT_FOUND", f"Repository {resource_id}:{tag} not found"))
            return
        if not grant.nim_entitled:
            self.send_json(403, _status("FORBIDDEN", "Access Denied"))
            return
        profiles = self.stub.profiles.get(resource_id)
        if profiles is None:
            self.send_json(404, _status("NOT_FOUND", f"No model manifest recorded for {resource_id}"))
            return
        self.send_json(200, {"resourceId": resource_id, "tag": tag or image["latestTag"], "profiles": profiles})


class OfflineNgc(StubServer):
    """The NGC look-alike. `keys` is the allow-list: API key → NgcKeyGrant."""

    handler_class = NgcHandler

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        images: Iterable[dict[str, Any]] | None = None,
        keys: Mapping[str, NgcKeyGrant] | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.images = list(images if images is not None else load_ngc_snapshot())
        self.profiles: dict[str, list[dict[str, Any]]] = load_ngc_profiles()
        self.keys: dict[str, NgcKeyGrant] = dict(keys or {})
        self.issued: dict[str, NgcKeyGrant] = {}  # bearer tokens handed out by /token


DEMO_KEY = "nvapi-offline-demo-key"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve ModelDeck's recorded NGC NIM snapshot.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument(
        "--key", action="append", default=[], help="Add an API key to the allow-list. Repeatable."
    )
    args = parser.parse_args(argv)
    keys = {key: NgcKeyGrant() for key in [DEMO_KEY, *args.key]}
    ngc = OfflineNgc(host=args.host, port=args.port, keys=keys)
    print(
        f"Offline NGC: {len(ngc.images)} NIM images at http://{args.host}:{args.port}", flush=True
    )
    url = f"http://{args.host}:{args.port}"
    setting = "" if os.environ.get("MODELDECK_NGC_API_URL") == url else f"set MODELDECK_NGC_API_URL={url}; "
    print(f"  {setting}demo key: {DEMO_KEY}", flush=True)
    ngc.serve_forever()


if __name__ == "__main__":
    main()
