"""A local Hub-shaped HTTP server answering from a recorded snapshot: for the offline demo and tests.

It speaks the parts of the Hugging Face Hub API that `catalog.hub` uses, in the Hub's own JSON
shapes and headers, so the real `huggingface_hub` client runs against it unchanged:

- `GET /api/models` — search, filter, sort, `limit`, `expand`, cursor pagination with a
  `Link: <...>; rel="next"` header;
- `GET /api/models/{repo_id}` and `/api/models/{repo_id}/revision/{rev}` (`blobs=true` adds sizes);
- `HEAD|GET /{repo_id}/resolve/{rev}/{path}` for small files (config.json, README.md, ...), with
  `X-Repo-Commit` and `ETag`; LFS weight files answer HEAD only, with `X-Linked-Size`/`X-Linked-Etag`;
- `GET /api/whoami-v2`;
- errors carry `X-Error-Code` (`RepoNotFound`, `GatedRepo`, `RevisionNotFound`, `EntryNotFound`)
  and `X-Error-Message`, with the status codes the Hub uses; an unknown token gets 401
  "Invalid credentials in Authorization header" on every route, as on the Hub.

Test hooks: `tokens` (the allow-list, with per-token gated access), `mode = "error"` (every
request answers 500) and `mode = "stall"` (every request hangs `stall_seconds` before answering),
`max_page_size` (to force pagination) and `requests` (what was asked, for assertions).

Run it for the console's offline demo:

    python -m sandbox.offline_hub --port 8092
    MODELDECK_HF_ENDPOINT=http://127.0.0.1:8092 python manage.py runserver
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

SNAPSHOT_DIR = Path(__file__).resolve().parent / "snapshot"
HUB_SNAPSHOT = SNAPSHOT_DIR / "hub_models.json"

Mode = Literal["normal", "error", "stall"]

# Files this server can return the bytes of; everything else is a weight file stored in LFS
# whose size is known but whose bytes are not part of the snapshot.
_LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".gguf",
    ".onnx",
    ".h5",
    ".msgpack",
    ".model",
)
_LFS_POINTER_SIZE = 134


class StubServer:
    """A ThreadingHTTPServer on a background thread, with the test hooks both fake servers share."""

    handler_class: ClassVar[type[BaseHTTPRequestHandler]]

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.mode: Mode = "normal"
        self.stall_seconds = 30.0
        # (method, path with query) of every request, for tests that assert on what was asked.
        self.requests: list[tuple[str, str]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Set on stop() so that stalled handlers return at once instead of holding the port.
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> StubServer:
        handler = type(self.handler_class.__name__, (self.handler_class,), {"stub": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"{type(self).__name__}:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted (the CLI)."""
        self.start()
        try:
            assert self._thread is not None
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stall(self) -> None:
        self._stopping.wait(self.stall_seconds)

    def is_stopping(self) -> bool:
        return self._stopping.is_set()


class StubHandler(BaseHTTPRequestHandler):
    """JSON request handler: keep-alive HTTP/1.1, always a Content-Length, quiet logs."""

    protocol_version = "HTTP/1.1"
    server_version = "ModelDeckStub/1.0"
    stub: ClassVar[StubServer]
    body: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def send_body(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(
        self, status: int, payload: Any, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_body(status, json.dumps(payload).encode(), headers=headers)

    def bearer_token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _serve(self) -> None:
        self.stub.requests.append((self.command, self.path))
        # Read the body up front so that a keep-alive connection stays in step whatever we answer.
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length > 0 else b""
        if self.stub.mode == "stall":
            self.stub.stall()
            if self.stub.is_stopping():
                self.close_connection = True
                return
        try:
            if self.stub.mode == "error":
                self.send_json(
                    500,
                    {
                        "error": "Internal Error - We're working hard to fix this as soon as possible!"
                    },
                    headers={"X-Error-Message": "Internal Error"},
                )
            else:
                self.route()
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout test, typically) before we answered.
            self.close_connection = True

    def route(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    do_GET = do_HEAD = do_POST = _serve  # noqa: N815 - stdlib naming


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file: what the Hub uses as ETag for files not stored in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class TokenGrant:
    """What a token on the allow-list may do: the user it belongs to and which gated repos it reaches."""

    user: str
    gated_access: bool | frozenset[str] = True
    role: str = "read"

    def can_access(self, repo_id: str) -> bool:
        if isinstance(self.gated_access, bool):
            return self.gated_access
        return repo_id in self.gated_access


@dataclass
class HubRepo:
    """One model repository of the snapshot, with the bytes of its small files."""

    record: dict[str, Any]
    revisions: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def repo_id(self) -> str:
        return self.record["id"]

    @property
    def gated(self) -> bool:
        return bool(self.record.get("gated"))

    def resolve(self, revision: str) -> str | None:
        """Commit sha for a branch name or a sha (full, or a prefix of 7+ characters)."""
        if revision in self.revisions:
            return self.revisions[revision]
        shas = set(self.revisions.values())
        if len(revision) >= 7 and all(c in "0123456789abcdef" for c in revision):
            matches = [sha for sha in shas if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None


def _model_card(record: Mapping[str, Any]) -> bytes:
    card = record.get("cardData", {})
    front = "\n".join(f"{key}: {value}" for key, value in card.items())
    tags = "\n".join(f"- {tag}" for tag in record.get("tags", []) if ":" not in tag)
    body = f"---\n{front}\ntags:\n{tags}\n---\n\n# {record['id'].split('/')[-1]}\n\n"
    body += "Model card from ModelDeck's recorded Hub snapshot.\n"
    return body.encode()


def load_hub_snapshot(path: Path = HUB_SNAPSHOT) -> list[HubRepo]:
    """Read the recorded snapshot into repos that the server can answer from."""
    doc = json.loads(path.read_text())
    repos = []
    for record in doc["models"]:
        repo = HubRepo(record=record, revisions={"main": record["sha"]})
        config = json.dumps(record["config"], indent=2).encode() + b"\n"
        repo.files["config.json"] = config
        repo.files["README.md"] = _model_card(record)
        if record.get("pipeline_tag") == "text-generation":
            gen = {
                k: record["config"][k]
                for k in ("bos_token_id", "eos_token_id")
                if k in record["config"]
            }
            repo.files["generation_config.json"] = json.dumps(gen, indent=2).encode() + b"\n"
        for entry in record.get("files", []):
            repo.sizes[entry["path"]] = (
                len(repo.files[entry["path"]]) if entry["path"] in repo.files else entry["size"]
            )
        repos.append(repo)
    return repos


def _lfs_sha256(repo: HubRepo, path: str) -> str:
    # A stable stand-in for the LFS object's sha256: the snapshot has sizes, not contents.
    return hashlib.sha256(f"{repo.record['sha']}:{path}".encode()).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(_LFS_SUFFIXES)


# Properties of a model in the Hub's list answer when neither `expand` nor `full` is asked for.
_LIST_DEFAULT_FIELDS = (
    "_id",
    "id",
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
    "modelId",
)
_SORT_KEYS = {"downloads", "likes", "trendingScore", "lastModified", "createdAt"}
# Hub error messages, word for word where huggingface_hub looks at them.
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


class HubHandler(StubHandler):
    stub: ClassVar[OfflineHub]

    def route(self) -> None:
        hub = self.stub
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        raw_segments = [s for s in parts.path.split("/") if s]

        token = self.bearer_token()
        grant = hub.grant_for(token) if token else None
        if token and grant is None:
            self.send_json(
                401,
                {"error": INVALID_CREDENTIALS},
                headers={"X-Error-Message": INVALID_CREDENTIALS},
            )
            return

        if raw_segments[:2] == ["api", "whoami-v2"]:
            self.whoami(grant)
        elif raw_segments == ["api", "models"]:
            self.list_models(query)
        elif len(raw_segments) >= 4 and raw_segments[:2] == ["api", "models"]:
            repo_id = f"{unquote(raw_segments[2])}/{unquote(raw_segments[3])}"
            rest = raw_segments[4:]
            if not rest:
                self.model_info(repo_id, "main", query, grant)
            elif len(rest) == 2 and rest[0] == "revision":
                self.model_info(repo_id, unquote(rest[1]), query, grant)
            else:
                self.not_found()
        elif len(raw_segments) >= 5 and raw_segments[2] == "resolve":
            repo_id = f"{unquote(raw_segments[0])}/{unquote(raw_segments[1])}"
            revision = unquote(raw_segments[3])
            path = "/".join(unquote(s) for s in raw_segments[4:])
            self.resolve(repo_id, revision, path, grant)
        else:
            self.not_found()

    # --- errors, as the Hub sends them -------------------------------------------------

    def not_found(self) -> None:
        self.send_json(404, {"error": "Sorry, we can't find the page you are looking for."})

    def hub_error(self, status: int, code: str, message: str) -> None:
        # Header values are latin-1: a message quoting a typed revision ("\U000c7f0b") failed to
        # encode and the connection dropped, which the catalog rightly called "unreachable".
        header = message.encode("ascii", "backslashreplace").decode("ascii")
        self.send_json(
            status, {"error": message}, headers={"X-Error-Code": code, "X-Error-Message": header}
        )

    def repo_not_found(self, grant: TokenGrant | None) -> None:
        # Without a token the Hub answers 401 for a missing repo, so as not to reveal which
        # private repos exist; with one, 404.
        self.hub_error(401 if grant is None else 404, "RepoNotFound", "Repository not found")

    def find_repo(self, repo_id: str, grant: TokenGrant | None) -> HubRepo | None:
        repo = self.stub.repos.get(repo_id)
        if repo is None:
            self.repo_not_found(grant)
        return repo

    # --- routes ----------------------------------------------------------------------

    def whoami(self, grant: TokenGrant | None) -> None:
        if grant is None:
            self.send_json(
                401,
                {"error": INVALID_CREDENTIALS},
                headers={"X-Error-Message": INVALID_CREDENTIALS},
            )
            return
        self.send_json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(grant.user.encode()).hexdigest()[:24],
                "name": grant.user,
                "fullname": grant.user.title(),
                "email": f"{grant.user}@example.invalid",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "/avatars/default.svg",
                "orgs": [],
                "auth": {
                    "type": "access_token",
                    "accessToken": {
                        "displayName": "modeldeck",
                        "role": grant.role,
                        "createdAt": "2024-11-01T09:00:00.000Z",
                    },
                },
            },
        )

    def list_models(self, query: dict[str, list[str]]) -> None:
        hub = self.stub

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        items = [repo.record for repo in hub.repos.values()]
        if search := one("search"):
            items = [r for r in items if search.lower() in r["id"].lower()]
        if author := one("author"):
            items = [r for r in items if r["id"].split("/")[0].lower() == author.lower()]
        if pipeline_tag := one("pipeline_tag"):
            items = [r for r in items if r.get("pipeline_tag") == pipeline_tag]
        for wanted in query.get("filter", []):
            # The Hub's `filter` matches tags; library and task names are tags too.
            items = [
                r
                for r in items
                if wanted in r.get("tags", ())
                or wanted in (r.get("library_name"), r.get("pipeline_tag"))
            ]
        if (gated := one("gated")) is not None:
            want = gated.lower() == "true"
            items = [r for r in items if bool(r.get("gated")) == want]

        sort = one("sort") or "trendingScore"
        if sort not in _SORT_KEYS:
            self.send_json(400, {"error": f'"sort" must be one of {sorted(_SORT_KEYS)}'})
            return
        descending = one("direction") != "1"
        items.sort(key=lambda r: (r.get(sort) or 0, r["id"]), reverse=descending)

        try:
            limit = int(one("limit") or hub.max_page_size)
            cursor = one("cursor")
            offset = int(base64.urlsafe_b64decode(cursor).decode()) if cursor else 0
        except ValueError:
            self.send_json(400, {"error": "Invalid limit or cursor"})
            return
        page_size = max(1, min(limit, hub.max_page_size))
        page = items[offset : offset + page_size]

        expand = query.get("expand", []) + query.get("expand[]", [])
        full = (one("full") or "").lower() == "true"
        with_card = (one("cardData") or "").lower() == "true"
        with_config = (one("config") or "").lower() == "true"
        body = [
            self.list_item(r, expand=expand, full=full, card=with_card, config=with_config)
            for r in page
        ]

        headers = {}
        if offset + page_size < len(items):
            # Like the Hub: the next link repeats the query with an opaque cursor.
            params = [(k, v) for k, vs in query.items() if k != "cursor" for v in vs]
            params.append(
                ("cursor", base64.urlsafe_b64encode(str(offset + page_size).encode()).decode())
            )
            host = self.headers.get("Host") or f"{hub.host}:{hub.port}"
            headers["Link"] = f'<http://{host}/api/models?{urlencode(params)}>; rel="next"'
        self.send_json(200, body, headers=headers)

    def list_item(
        self,
        record: Mapping[str, Any],
        *,
        expand: Iterable[str],
        full: bool,
        card: bool,
        config: bool,
    ) -> dict[str, Any]:
        doc = self.stub.public_doc(record)
        expand = list(expand)
        if expand:
            item = {k: doc[k] for k in ("_id", "id") if k in doc}
            item.update({k: doc[k] for k in expand if k in doc})
            return item
        item = {k: doc[k] for k in _LIST_DEFAULT_FIELDS if k in doc}
        if full:
            for key in ("author", "sha", "lastModified", "gated", "disabled"):
                item[key] = doc[key]
            item["siblings"] = [{"rfilename": f["path"]} for f in record.get("files", [])]
        if card:
            item["cardData"] = doc["cardData"]
        if config:
            item["config"] = {
                k: record["config"][k]
                for k in ("architectures", "model_type")
                if k in record["config"]
            }
        return item

    def model_info(
        self, repo_id: str, revision: str, query: dict[str, list[str]], grant: TokenGrant | None
    ) -> None:
        repo = self.find_repo(repo_id, grant)
        if repo is None:
            return
        sha = repo.resolve(revision)
        if sha is None:
            self.hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        # Gated repos show their metadata to everyone; only their files need access.
        doc = self.stub.public_doc(repo.record)
        doc["sha"] = sha
        blobs = (query.get("blobs", [""])[0]).lower() == "true"
        siblings = []
        for entry in repo.record.get("files", []):
            path = entry["path"]
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                size = repo.sizes[path]
                sibling["size"] = size
                if _is_lfs(path):
                    sibling["blobId"] = hashlib.sha1(f"lfs:{sha}:{path}".encode()).hexdigest()
                    sibling["lfs"] = {
                        "sha256": _lfs_sha256(repo, path),
                        "size": size,
                        "pointerSize": _LFS_POINTER_SIZE,
                    }
                else:
                    sibling["blobId"] = git_blob_sha1(repo.files.get(path, b"x" * size))
            siblings.append(sibling)
        doc["siblings"] = siblings
        doc["spaces"] = []
        doc["usedStorage"] = sum(repo.sizes.values())
        doc["config"] = {
            k: repo.record["config"][k]
            for k in ("architectures", "model_type")
            if k in repo.record["config"]
        }
        expand = query.get("expand", []) + query.get("expand[]", [])
        if expand:
            doc = {k: doc[k] for k in ("_id", "id", *expand) if k in doc}
        self.send_json(200, doc)

    def resolve(self, repo_id: str, revision: str, path: str, grant: TokenGrant | None) -> None:
        repo = self.find_repo(repo_id, grant)
        if repo is None:
            return
        if repo.gated:
            if grant is None:
                self.hub_error(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in.",
                )
                return
            if not grant.can_access(repo_id):
                self.hub_error(
                    403,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted and you are not in the authorized "
                    f"list. Visit https://huggingface.co/{repo_id} to ask for access.",
                )
                return
        sha = repo.resolve(revision)
        if sha is None:
            self.hub_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return
        if path not in repo.sizes:
            self.hub_error(404, "EntryNotFound", "Entry not found")
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if path in repo.files:
            content = repo.files[path]
            headers["ETag"] = f'"{git_blob_sha1(content)}"'
            ctype = "application/json" if path.endswith(".json") else "text/plain; charset=utf-8"
            self.send_body(200, content, content_type=ctype, headers=headers)
            return
        # A weight file: the snapshot knows its size but not its bytes. HEAD answers the way
        # the Hub does for LFS files; a download is refused with a message saying why.
        headers["X-Linked-Size"] = str(repo.sizes[path])
        headers["X-Linked-Etag"] = f'"{_lfs_sha256(repo, path)}"'
        headers["ETag"] = f'"{_lfs_sha256(repo, path)}"'
        if self.command == "HEAD":
            self.send_body(200, b"", content_type="application/octet-stream", headers=headers)
        else:
            self.send_json(
                403,
                {
                    "error": "The offline Hub has file sizes, not weights; it cannot serve this file."
                },
                headers={"X-Error-Message": "The offline Hub does not serve weight files"},
            )


class OfflineHub(StubServer):
    """The Hub look-alike. `tokens` is the allow-list: token → TokenGrant."""

    handler_class = HubHandler

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        repos: Iterable[HubRepo] | None = None,
        tokens: Mapping[str, TokenGrant] | None = None,
        accept_any_token: bool = False,
        max_page_size: int = 1000,
    ) -> None:
        super().__init__(host=host, port=port)
        self.repos: dict[str, HubRepo] = {
            r.repo_id: r for r in (repos if repos is not None else load_hub_snapshot())
        }
        self.tokens: dict[str, TokenGrant] = dict(tokens or {})
        self.accept_any_token = accept_any_token
        # The Hub caps a page at 1000 models; tests lower it to exercise `Link` pagination.
        self.max_page_size = max_page_size

    def grant_for(self, token: str) -> TokenGrant | None:
        if token in self.tokens:
            return self.tokens[token]
        if self.accept_any_token:
            return TokenGrant(user="offline-user")
        return None

    def add_revision(self, repo_id: str, name: str, sha: str) -> None:
        """Make `name` (a branch or tag) resolve to `sha` in `repo_id`."""
        self.repos[repo_id].revisions[name] = sha

    def public_doc(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A model's metadata as the Hub's model API shows it (without files)."""
        return {
            "_id": record["sha"][:24],
            "id": record["id"],
            "modelId": record["id"],
            "author": record.get("author", record["id"].split("/")[0]),
            "sha": record["sha"],
            "lastModified": record.get("lastModified"),
            "createdAt": record.get("createdAt"),
            "private": record.get("private", False),
            "disabled": record.get("disabled", False),
            "gated": record.get("gated", False),
            "pipeline_tag": record.get("pipeline_tag"),
            "library_name": record.get("library_name"),
            "tags": list(record.get("tags", [])),
            "downloads": record.get("downloads", 0),
            "likes": record.get("likes", 0),
            "trendingScore": record.get("trendingScore", 0),
            "cardData": dict(record.get("cardData", {})),
            "safetensors": record.get("safetensors"),
        }


DEMO_TOKEN = "hf_offline_demo_token"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Serve ModelDeck's recorded Hugging Face Hub snapshot."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN=USER",
        help="Add a token to the allow-list (with access to gated repos). Repeatable.",
    )
    parser.add_argument(
        "--accept-any-token",
        action="store_true",
        help="Treat every token as valid, with gated access.",
    )
    args = parser.parse_args(argv)
    tokens = {DEMO_TOKEN: TokenGrant(user="demo")}
    for item in args.token:
        token, _, user = item.partition("=")
        tokens[token] = TokenGrant(user=user or "user")
    hub = OfflineHub(
        host=args.host, port=args.port, tokens=tokens, accept_any_token=args.accept_any_token
    )
    print(f"Offline Hub: {len(hub.repos)} models at http://{args.host}:{args.port}", flush=True)
    url = f"http://{args.host}:{args.port}"
    # `make run` already points ModelDeck here (and passes that on): the hint is only for a
    # hand-started hub.
    setting = "" if os.environ.get("MODELDECK_HF_ENDPOINT") == url else f"set MODELDECK_HF_ENDPOINT={url}; "
    print(f"  {setting}demo token: {DEMO_TOKEN}", flush=True)
    hub.serve_forever()


if __name__ == "__main__":
    main()
