"""The catalog's NVIDIA NGC client: list NIM container images, read their tags, check an API key.

NGC endpoints used (shapes as the NIM Operator and OpenShift AI's NIM integration read them):

- Catalog search, public: `GET {api}/v2/search/catalog/resources/CONTAINER?q=<json>` with
  `{"query": "*:*" or text, "filters": [{"field": "orgName", "value": "nim"}], "page": n,
  "pageSize": n}` (pages from 0). Results are grouped by resource type; an image's latest tag
  and size are in its `attributes` key/value list.
- Image details and tags, authenticated: `GET {api}/v2/org/{org}/team/{team}/repos/{name}`
  → `tags`, `latestTag`, `updatedDate`, `latestImageSize`, ...
- Authentication. A personal key (`nvapi-...`) is sent as a Bearer token as is and checked with
  `POST {api}/v3/keys/get-caller-info`. A legacy API key is first exchanged for a short-lived
  token at `GET {authn}/token?service=ngc` with `Authorization: ApiKey <key>` (the same key is
  what `docker login nvcr.io -u '$oauthtoken'` takes as password).

Base URLs are configurable; `authn_url` defaults to https://authn.nvidia.com for the real NGC
API and to the API URL itself otherwise (the offline NGC serves both). Every call is bounded
by `timeout` seconds in total and raises `NgcError` with a message a user can act on.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

DEFAULT_API_URL = "https://api.ngc.nvidia.com"
DEFAULT_AUTHN_URL = "https://authn.nvidia.com"
REGISTRY = "nvcr.io"
DEFAULT_TIMEOUT = 10.0
NIM_ORG = "nim"
API_KEYS_PAGE = "https://org.ngc.nvidia.com/setup/api-keys"


class NgcError(Exception):
    """An NGC call failed; `message` is for the user, `code` for the program.

    Codes: unauthorized, forbidden, not_found, unavailable_for_legal_reasons, rate_limited,
    timeout, unreachable, server_error, invalid_name, bad_response, ngc_error.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class NimImage:
    """A NIM container image in the NGC catalog."""

    resource_id: str  # org/team/name, e.g. nim/meta/llama-3.1-8b-instruct
    org: str
    team: str | None
    name: str
    display_name: str
    description: str
    latest_tag: str | None
    size_bytes: int | None
    updated_at: datetime | None
    labels: tuple[str, ...] = field(default=())

    @property
    def image(self) -> str:
        """The image reference without a tag, e.g. nvcr.io/nim/meta/llama-3.1-8b-instruct."""
        return f"{REGISTRY}/{self.resource_id}"


@dataclass(frozen=True)
class NimImagePage:
    items: tuple[NimImage, ...]
    page: int  # from 1
    page_size: int
    total: int
    has_next: bool


@dataclass(frozen=True)
class NimImageTags:
    resource_id: str
    display_name: str | None
    description: str | None
    tags: tuple[str, ...]  # newest version first, then moving tags such as "latest"
    latest_tag: str | None
    updated_at: datetime | None
    size_bytes: int | None

    @property
    def image(self) -> str:
        return f"{REGISTRY}/{self.resource_id}"


@dataclass(frozen=True)
class KeyCheck:
    """Result of checking an NGC API key: never raises, `message` says what happened."""

    ok: bool
    message: str
    code: str | None = None
    kind: str | None = None  # "personal" (nvapi-...) or "legacy"
    org: str | None = None


# --- plumbing ------------------------------------------------------------------------


class _Budget:
    """One deadline for all the requests of a call (a token exchange plus the call itself)."""

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def left(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise httpx.TimeoutException("deadline reached")
        return remaining


def _authn_url(base_url: str, authn_url: str | None) -> str:
    if authn_url:
        return authn_url.rstrip("/")
    return DEFAULT_AUTHN_URL if base_url.rstrip("/") == DEFAULT_API_URL else base_url.rstrip("/")


def _key_kind(api_key: str) -> str:
    return "personal" if api_key.startswith("nvapi-") else "legacy"


def _request(
    client: httpx.Client,
    budget: _Budget,
    method: str,
    url: str,
    *,
    base_url: str,
    subject: str | None = None,
    **kwargs: Any,
) -> Any:
    """Send a request within the budget; return its JSON or raise NgcError."""
    try:
        response = client.request(method, url, timeout=budget.left(), **kwargs)
    except httpx.TimeoutException as exc:
        raise NgcError(
            f"NGC at {base_url} did not answer within {budget.timeout:g} s; try again or check the network",
            "timeout",
        ) from exc
    except httpx.TransportError as exc:
        raise NgcError(
            f"NGC at {base_url} could not be reached ({exc}); check the URL and the network",
            "unreachable",
        ) from exc
    if response.status_code >= 400:
        raise _status_error(response, base_url=base_url, subject=subject)
    try:
        return response.json()
    except ValueError as exc:
        raise NgcError(
            f"NGC at {base_url} answered something that is not JSON", "bad_response"
        ) from exc


def _status_error(response: httpx.Response, *, base_url: str, subject: str | None) -> NgcError:
    status = response.status_code
    what = subject or "this resource"
    if status == 401:
        return NgcError(
            f"NGC rejected the API key (401): it is invalid, expired or revoked; generate a new one at {API_KEYS_PAGE}",
            "unauthorized",
        )
    if status == 403:
        return NgcError(
            f"The NGC API key has no access to {what} (403): NIM images need an NVIDIA AI Enterprise "
            "or NVIDIA Developer Program entitlement on the key's organization",
            "forbidden",
        )
    if status == 404:
        return NgcError(f"{what} was not found on NGC (check the image name)", "not_found")
    if status == 451:
        return NgcError(
            f"{what} is not available in your region (451)", "unavailable_for_legal_reasons"
        )
    if status == 429:
        return NgcError(
            "NGC is rate-limiting requests (429); wait a minute and try again", "rate_limited"
        )
    if status >= 500:
        return NgcError(
            f"NGC at {base_url} is failing (HTTP {status}); try again later", "server_error"
        )
    return NgcError(f"NGC at {base_url} answered HTTP {status}", "ngc_error")


def _bearer(
    client: httpx.Client, budget: _Budget, api_key: str, *, base_url: str, authn_url: str | None
) -> str:
    """The Bearer token for API calls: the personal key itself, or a token exchanged for a legacy key."""
    if _key_kind(api_key) == "personal":
        return api_key
    authn = _authn_url(base_url, authn_url)
    body = _request(
        client,
        budget,
        "GET",
        f"{authn}/token",
        base_url=authn,
        params={"service": "ngc"},
        headers={"Authorization": f"ApiKey {api_key}", "Accept": "application/json"},
    )
    token = body.get("token") if isinstance(body, Mapping) else None
    if not token:
        raise NgcError(f"NGC authentication at {authn} answered without a token", "bad_response")
    return str(token)


def _client() -> httpx.Client:
    return httpx.Client(
        headers={"Accept": "application/json", "User-Agent": "modeldeck"}, follow_redirects=True
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_IMAGE_REF = re.compile(
    r"^(?:nvcr\.io/)?(?P<path>[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*){1,2})(?::[\w][\w.-]*)?$"
)


def parse_image(image: str) -> tuple[str, str | None, str]:
    """Split an image reference (`nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3`, or without
    registry and tag) into (org, team, name)."""
    match = _IMAGE_REF.match(image.strip())
    if not match:
        raise NgcError(
            f"{image!r} is not an NGC image name: expected org/team/name, e.g. nim/meta/llama-3.1-8b-instruct",
            "invalid_name",
        )
    parts = match["path"].split("/")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return parts[0], None, parts[1]


def _version_key(tag: str) -> tuple[int, tuple[int, ...], str]:
    # Full versions first, highest first; then moving tags: latest, then 1.2, 1.1, 1.
    numbers = tuple(int(n) for n in re.findall(r"\d+", tag))[:4]
    padded = numbers + (0,) * (4 - len(numbers))
    if re.fullmatch(r"\d+\.\d+\.\d+.*", tag):
        rank = 0
    elif not numbers:
        rank = 1
    else:
        rank = 2
    return (rank, tuple(-n for n in padded), tag)


# --- public functions ------------------------------------------------------------------


def list_nim_images(
    *,
    base_url: str = DEFAULT_API_URL,
    query: str = "",
    org: str = NIM_ORG,
    page: int = 1,
    page_size: int = 25,
    timeout: float = DEFAULT_TIMEOUT,
) -> NimImagePage:
    """Search the public NGC catalog for container images in `org` (NIMs by default), most popular first."""
    if page < 1:
        raise ValueError("page must be 1 or more")
    if not 1 <= page_size <= 100:
        raise ValueError("page_size must be between 1 and 100")
    base_url = base_url.rstrip("/")
    q = {
        "query": query.strip() or "*:*",
        "filters": [{"field": "orgName", "value": org}],
        "orderBy": [{"field": "score", "value": "DESC"}],
        "page": page - 1,
        "pageSize": page_size,
    }
    budget = _Budget(timeout)
    with _client() as client:
        body = _request(
            client,
            budget,
            "GET",
            f"{base_url}/v2/search/catalog/resources/CONTAINER",
            base_url=base_url,
            params={"q": json.dumps(q)},
        )
    if not isinstance(body, Mapping):
        raise NgcError(f"NGC at {base_url} answered an unexpected search result", "bad_response")
    items: list[NimImage] = []
    seen: set[str] = set()
    for group in body.get("results") or ():
        # NGC may add a "_scored" group repeating the top hits; the CONTAINER group is the list.
        if group.get("groupValue") != "CONTAINER":
            continue
        for res in group.get("resources") or ():
            resource_id = res.get("resourceId") or ""
            if not resource_id or resource_id in seen or res.get("orgName", org) != org:
                continue
            seen.add(resource_id)
            attributes = {a.get("key"): a.get("value") for a in res.get("attributes") or ()}
            labels = tuple(
                value
                for label in res.get("labels") or ()
                if label.get("key") == "general"
                for value in label.get("values") or ()
            )
            items.append(
                NimImage(
                    resource_id=resource_id,
                    org=res.get("orgName") or org,
                    team=res.get("teamName"),
                    name=res.get("name") or resource_id.rsplit("/", 1)[-1],
                    display_name=res.get("displayName") or res.get("name") or resource_id,
                    description=res.get("description") or "",
                    latest_tag=attributes.get("latestTag"),
                    size_bytes=_as_int(attributes.get("size")),
                    updated_at=_parse_time(
                        res.get("dateModified") or attributes.get("latestTagPushedDate")
                    ),
                    labels=labels,
                )
            )
    total = _as_int(body.get("resultTotal")) or len(items)
    page_total = _as_int(body.get("resultPageTotal")) or 1
    return NimImagePage(
        items=tuple(items), page=page, page_size=page_size, total=total, has_next=page < page_total
    )


def image_tags(
    *,
    base_url: str = DEFAULT_API_URL,
    authn_url: str | None = None,
    api_key: str,
    image: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> NimImageTags:
    """The tags of one image (e.g. `nim/meta/llama-3.1-8b-instruct`), newest version first."""
    if not api_key or not api_key.strip():
        raise NgcError("No NGC API key is set: NIM image details need one", "unauthorized")
    org, team, name = parse_image(image)
    resource_id = "/".join(p for p in (org, team, name) if p)
    base_url = base_url.rstrip("/")
    path = f"/v2/org/{org}/team/{team}/repos/{name}" if team else f"/v2/org/{org}/repos/{name}"
    budget = _Budget(timeout)
    with _client() as client:
        bearer = _bearer(client, budget, api_key.strip(), base_url=base_url, authn_url=authn_url)
        body = _request(
            client,
            budget,
            "GET",
            base_url + path,
            base_url=base_url,
            subject=f"NIM image {resource_id}",
            params={"resolve-labels": "true"},
            headers={"Authorization": f"Bearer {bearer}"},
        )
    if not isinstance(body, Mapping):
        raise NgcError(f"NGC at {base_url} answered unexpected image details", "bad_response")
    tags = tuple(sorted({str(t) for t in body.get("tags") or ()}, key=_version_key))
    return NimImageTags(
        resource_id=resource_id,
        display_name=body.get("displayName"),
        description=body.get("shortDescription"),
        tags=tags,
        latest_tag=body.get("latestTag"),
        updated_at=_parse_time(body.get("updatedDate")),
        size_bytes=_as_int(body.get("latestImageSize")),
    )


def check_key(
    *,
    base_url: str = DEFAULT_API_URL,
    authn_url: str | None = None,
    api_key: str | None,
    timeout: float = DEFAULT_TIMEOUT,
) -> KeyCheck:
    """Check an NGC API key with NGC. Never raises: `ok` and `message` say how it went."""
    if not api_key or not api_key.strip():
        return KeyCheck(ok=False, code="no_key", message="No NGC API key is set")
    api_key = api_key.strip()
    kind = _key_kind(api_key)
    base_url = base_url.rstrip("/")
    try:
        budget = _Budget(timeout)
        with _client() as client:
            if kind == "legacy":
                _bearer(client, budget, api_key, base_url=base_url, authn_url=authn_url)
                return KeyCheck(ok=True, kind=kind, message="NGC accepted the API key (legacy key)")
            body = _request(
                client,
                budget,
                "POST",
                f"{base_url}/v3/keys/get-caller-info",
                base_url=base_url,
                data={"credentials": api_key},
                headers={"Authorization": f"Bearer {api_key}"},
            )
    except NgcError as error:
        return KeyCheck(ok=False, code=error.code, kind=kind, message=error.message)
    org = body.get("orgName") if isinstance(body, Mapping) else None
    where = f" for organization {org}" if org else ""
    return KeyCheck(
        ok=True, kind=kind, org=org, message=f"NGC accepted the personal API key{where}"
    )


# --- NIM model profiles ---------------------------------------------------------------------
# A NIM image's profiles live in the model manifest inside the image
# (/etc/nim/config/model_manifest.yaml); `list-model-profiles` prints them as
# `  - <64-hex id> (<name>)` lines under "MODEL PROFILES", and a profile is chosen with
# NIM_MODEL_PROFILE=<id or name>. Names are built from the manifest's tags:
# `tensorrt_llm-h100-fp8-tp2-latency`, `vllm-bf16-tp1`, `vllm-bf16-tp4-pp1-lora`.
# Sources: https://docs.nvidia.com/nim/large-language-models/1.3.0/profiles.html (output,
# NIM_MODEL_PROFILE, latency/throughput), https://docs.nvidia.com/nim/large-language-models/
# latest/deployment/model-profiles-and-selection.html (name pattern: backend, precision, tp, pp,
# -lora). NGC's public API has no route for a manifest: the offline NGC serves the recorded
# manifests at `GET /v2/org/{org}/team/{team}/repos/{name}/profiles?tag=<tag>` (ModelDeck's
# own route), and output pasted from `list-model-profiles` is read by parse_list_model_profiles.

PROFILE_LINE = re.compile(r"^\s*-\s+([0-9a-f]{64})\s+\(([^)\s]+)\)\s*$")
PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8", "int4", "mxfp4", "nvfp4", "awq")


@dataclass(frozen=True)
class NimProfile:
    """One profile of a NIM image: its id (a hash) and name, and the facts the name carries."""

    id: str
    name: str
    engine: str = ""  # tensorrt_llm, vllm, sglang, trtllm
    precision: str = ""  # bf16, fp8, ...
    gpu: str = ""  # H100, A100, L40S ... ; "" for a generic profile (any GPU with the memory)
    tp: int = 1
    pp: int = 1
    mode: str = ""  # latency or throughput (optimized TensorRT-LLM profiles)
    lora: bool = False

    @property
    def gpus(self) -> int:
        """GPUs one replica needs: tensor × pipeline parallelism."""
        return self.tp * self.pp

    def label(self) -> str:
        parts = [self.gpu or "any GPU", self.precision.upper() or "?", f"TP{self.tp}"]
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        if self.mode:
            parts.append(self.mode)
        if self.lora:
            parts.append("LoRA")
        return f"{self.name} · {' · '.join(parts)}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "engine": self.engine, "precision": self.precision,
                "gpu": self.gpu, "tp": self.tp, "pp": self.pp, "mode": self.mode, "lora": self.lora}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NimProfile:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def profile_from_name(profile_id: str, name: str, tags: Mapping[str, Any] | None = None) -> NimProfile:
    """A profile's facts from its manifest tags where given, else from its name."""
    tags = dict(tags or {})
    parts = name.split("-")
    engine = str(tags.get("llm_engine") or (parts[0] if parts else ""))
    precision = str(tags.get("precision") or next((p for p in parts if p.lower() in PRECISIONS), ""))
    tp = int(tags.get("tp") or next((p[2:] for p in parts if re.fullmatch(r"tp\d+", p)), 1))
    pp = int(tags.get("pp") or next((p[2:] for p in parts if re.fullmatch(r"pp\d+", p)), 1))
    mode = str(tags.get("profile") or next((p for p in parts if p in ("latency", "throughput")), ""))
    known = {engine, precision, f"tp{tp}", f"pp{pp}", mode, "lora", ""}
    gpu = str(tags.get("gpu") or next((p for p in parts[1:] if p not in known and p.lower() not in PRECISIONS), ""))
    lora = str(tags.get("feat_lora", "")).lower() == "true" or name.endswith("-lora")
    return NimProfile(id=profile_id, name=name, engine=engine, precision=precision.lower(),
                      gpu=gpu.upper(), tp=tp, pp=pp, mode=mode, lora=lora)  # fmt: skip


def parse_list_model_profiles(text: str) -> tuple[NimProfile, ...]:
    """The profiles in `list-model-profiles` output (compatible and incompatible alike)."""
    out, seen = [], set()
    for line in (text or "").splitlines():
        m = PROFILE_LINE.match(line)
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            out.append(profile_from_name(m.group(1), m.group(2)))
    return tuple(out)


def image_profiles(
    *,
    base_url: str = DEFAULT_API_URL,
    authn_url: str | None = None,
    api_key: str,
    image: str,
    tag: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[NimProfile, ...]:
    """The profiles of one image at one tag, from the offline NGC's recorded manifests.

    Raises NgcError; `not_found` where the server has no manifest for it (NGC itself)."""
    if not api_key or not api_key.strip():
        raise NgcError("No NGC API key is set: NIM profiles need one", "unauthorized")
    org, team, name = parse_image(image)
    resource_id = "/".join(p for p in (org, team, name) if p)
    base_url = base_url.rstrip("/")
    path = f"/v2/org/{org}/team/{team}/repos/{name}" if team else f"/v2/org/{org}/repos/{name}"
    budget = _Budget(timeout)
    with _client() as client:
        bearer = _bearer(client, budget, api_key.strip(), base_url=base_url, authn_url=authn_url)
        body = _request(
            client, budget, "GET", f"{base_url}{path}/profiles", base_url=base_url,
            subject=f"the profiles of NIM image {resource_id}:{tag}", params={"tag": tag},
            headers={"Authorization": f"Bearer {bearer}"},
        )  # fmt: skip
    items = body.get("profiles") if isinstance(body, Mapping) else None
    if not isinstance(items, list):
        raise NgcError(f"NGC at {base_url} answered unexpected profiles", "bad_response")
    profiles = []
    for item in items:
        if not isinstance(item, Mapping) or not re.fullmatch(r"[0-9a-f]{64}", str(item.get("id", ""))):
            raise NgcError(f"NGC at {base_url} answered a profile without an id", "bad_response")
        profiles.append(profile_from_name(str(item["id"]), str(item.get("name") or ""), item.get("tags")))
    return tuple(profiles)
