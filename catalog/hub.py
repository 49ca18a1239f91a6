"""The catalog's Hugging Face Hub client: search models, read their facts, pin revisions, check tokens.

Built on the real `huggingface_hub.HfApi` (endpoint configurable, so the offline Hub in
`sandbox.offline_hub` or a mirror works the same as https://huggingface.co). Every function is
keyword-only, returns small frozen dataclasses, and raises one exception type, `HubError`,
whose message can be shown to the user as is.

Time bounds. `huggingface_hub` leaves some calls without a timeout (`list_models`, `whoami`) and
retries others for up to a minute (timeouts and 5xx, with back-off). A console page cannot
wait that long, so each call here runs under a deadline of `timeout` seconds (default 10)
enforced by an HTTP transport installed with `huggingface_hub.set_client_factory`: every
request inside one of our calls gets at most the time left, and a timeout, connection error,
429 or 5xx ends the call at once instead of being retried. Requests made by other code in the
process pass through untouched.

Tokens. A project's token is passed explicitly; with no token we send none (`token=False`),
so the server's own `HF_TOKEN` or `hf auth login` token is never used on a project's behalf.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

# Before huggingface_hub is imported: it reads these once. Never set HF_HUB_OFFLINE: it would
# also block a local endpoint such as the offline Hub.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import huggingface_hub  # noqa: E402
from huggingface_hub import HfApi, constants  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import _http as _hf_http  # noqa: E402

constants.HF_HUB_DISABLE_TELEMETRY = True  # in case huggingface_hub was imported before us

# The HTTP library huggingface_hub speaks: httpx2 since huggingface_hub 2.0, httpx in 1.x.
_httplib: Any = getattr(_hf_http, "httpx2", None) or _hf_http.httpx

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT = 10.0
# Search pages past this many results are not offered: HfApi.list_models has no offset, so a
# page is found by reading every result before it (see search_models).
MAX_SEARCH_RESULTS = 1000

SearchSort = Literal["downloads", "likes", "trending", "last_modified"]
_SORTS: dict[str, str] = {
    "downloads": "downloads",
    "likes": "likes",
    "trending": "trending_score",
    "last_modified": "last_modified",
}
# What a search result shows; asking for exactly these keeps the Hub's answer small.
_SEARCH_EXPAND = [
    "author",
    "downloads",
    "gated",
    "lastModified",
    "library_name",
    "likes",
    "pipeline_tag",
    "tags",
]


class HubError(Exception):
    """A Hub call failed; `message` is for the user, `code` for the program.

    Codes: not_found, gated, revision_not_found, unauthorized, forbidden, rate_limited,
    timeout, unreachable, server_error, invalid_name, bad_response, hub_error.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class HubModel:
    """One search result."""

    repo_id: str
    author: str | None
    task: str | None
    library: str | None
    downloads: int
    likes: int
    gated: bool
    gated_mode: str | None  # "auto" or "manual" approval, None when not gated
    last_modified: datetime | None
    tags: tuple[str, ...]

    @property
    def pipeline_tag(self) -> str | None:
        return self.task


@dataclass(frozen=True)
class SearchPage:
    """One page of search results; pages are numbered from 1."""

    items: tuple[HubModel, ...]
    page: int
    page_size: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.page > 1


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int | None
    lfs: bool


@dataclass(frozen=True)
class ModelConfigFacts:
    """Architecture facts from config.json; None where the config does not say."""

    architecture: str | None
    model_type: str | None
    num_hidden_layers: int | None
    hidden_size: int | None
    num_attention_heads: int | None
    num_key_value_heads: int | None
    head_dim: int | None
    max_position_embeddings: int | None
    dtype: str | None
    vocab_size: int | None
    num_experts: int | None = None
    num_experts_per_token: int | None = None
    quantization: str | None = None
    # True when the language-model facts came from a nested config (`text_config`, ...),
    # as in vision-language models.
    nested: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, e.g. for a JSONField."""
        return asdict(self)


@dataclass(frozen=True)
class ModelDetail:
    """What the catalog records about one model at one commit."""

    repo_id: str
    revision: str | None
    sha: str
    license: str | None
    gated: bool
    gated_mode: str | None
    private: bool
    task: str | None
    library: str | None
    tags: tuple[str, ...]
    downloads: int
    likes: int
    last_modified: datetime | None
    parameters: int | None
    parameters_by_dtype: Mapping[str, int]
    dtype: str | None
    files: tuple[HubFile, ...]
    config: ModelConfigFacts | None

    @property
    def pipeline_tag(self) -> str | None:
        return self.task

    @property
    def size_bytes(self) -> int:
        """Total size of the repository's files at this commit."""
        return sum(f.size or 0 for f in self.files)

    @property
    def weights_bytes(self) -> int:
        """Size of the safetensors weight files (what a deployment downloads)."""
        return sum(f.size or 0 for f in self.files if f.path.endswith(".safetensors"))


@dataclass(frozen=True)
class TokenCheck:
    """Result of checking a Hub token: never raises, the message says what happened."""

    ok: bool
    message: str
    code: str | None = None
    user: str | None = None
    role: str | None = None
    orgs: tuple[str, ...] = field(default=())


# --- time bounds -----------------------------------------------------------------------


@dataclass(frozen=True)
class _CallBudget:
    endpoint: str
    timeout: float
    deadline: float


_CURRENT_CALL: ContextVar[_CallBudget | None] = ContextVar("modeldeck_hub_call", default=None)


class _Timeout(Exception):
    """Raised by the transport; deliberately not an httpx error, so huggingface_hub won't retry it."""


class _Unreachable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _FailedStatus(Exception):
    def __init__(self, status: int, server_message: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.server_message = server_message


# Statuses huggingface_hub would retry with back-off (up to minutes for 429); we give up instead.
_FAIL_FAST_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _BoundedTransport(_httplib.BaseTransport):  # type: ignore[misc]
    """Bounds requests made inside one of our calls by its deadline; leaves the others alone."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def handle_request(self, request: Any) -> Any:
        budget = _CURRENT_CALL.get()
        if budget is None:
            return self._inner.handle_request(request)
        remaining = budget.deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout()
        seconds = min(budget.timeout, remaining)
        request.extensions = {
            **request.extensions,
            "timeout": {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds},
        }
        try:
            response = self._inner.handle_request(request)
        except _httplib.TimeoutException as exc:
            raise _Timeout() from exc
        except _httplib.TransportError as exc:
            raise _Unreachable(str(exc) or type(exc).__name__) from exc
        if response.status_code in _FAIL_FAST_STATUSES:
            message = response.headers.get("X-Error-Message")
            response.close()
            raise _FailedStatus(response.status_code, message)
        return response

    def close(self) -> None:
        self._inner.close()


_install_lock = threading.Lock()
_installed = False


def _bounded_client_factory() -> Any:
    # Start from huggingface_hub's own client so that its request hook (request ids, offline
    # mode check) and settings stay, and only swap the transport.
    base = _hf_http.default_client_factory()
    client = _httplib.Client(
        event_hooks=base.event_hooks,
        follow_redirects=base.follow_redirects,
        timeout=None,
        transport=_BoundedTransport(_httplib.HTTPTransport()),
    )
    base.close()
    return client


def _install_transport() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if not _installed:
            huggingface_hub.set_client_factory(_bounded_client_factory)
            _installed = True


@contextmanager
def _bounded(endpoint: str, timeout: float) -> Iterator[None]:
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    _install_transport()
    token = _CURRENT_CALL.set(_CallBudget(endpoint, timeout, time.monotonic() + timeout))
    try:
        yield
    finally:
        _CURRENT_CALL.reset(token)


# --- errors ------------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _to_hub_error(
    exc: BaseException,
    *,
    endpoint: str,
    timeout: float,
    token: str | None,
    repo_id: str | None = None,
    revision: str | None = None,
) -> HubError:
    """Turn whatever huggingface_hub or the transport raised into a HubError a user can act on."""
    for cause in _causes(exc):
        if isinstance(cause, HubError):
            return cause
        if isinstance(cause, _Timeout) or isinstance(cause, _httplib.TimeoutException):
            return HubError(
                f"The Hub at {endpoint} did not answer within {timeout:g} s; "
                "try again or check the network",
                "timeout",
            )
        if isinstance(cause, _Unreachable) or isinstance(cause, _httplib.TransportError):
            return HubError(
                f"The Hub at {endpoint} could not be reached ({cause}); check the endpoint and the network",
                "unreachable",
            )
        if isinstance(cause, _FailedStatus):
            return _status_error(cause.status, endpoint)
        if isinstance(cause, GatedRepoError):
            hint = "" if token else " (no Hugging Face token is set)"
            return HubError(
                f"{repo_id or 'This model'} is gated: accept its license on the Hub and use a token "
                f"with access{hint}",
                "gated",
            )
        if isinstance(cause, RevisionNotFoundError):
            return HubError(
                f"Revision {revision!r} of {repo_id} was not found on the Hub "
                "(check the branch, tag or commit)",
                "revision_not_found",
            )
        if isinstance(cause, RepositoryNotFoundError):
            return HubError(
                f"Model {repo_id} was not found on the Hub (check the name or your token's access)",
                "not_found",
            )
        if isinstance(cause, HfHubHTTPError):
            return _status_error(cause.response.status_code, endpoint)
        if isinstance(cause, HFValidationError):
            return HubError(
                f"{repo_id!r} is not a valid model name: expected owner/name, e.g. Qwen/Qwen2.5-7B-Instruct",
                "invalid_name",
            )
    return HubError(f"Unexpected answer from the Hub at {endpoint}: {exc}", "bad_response")


def _status_error(status: int, endpoint: str) -> HubError:
    if status == 401:
        return HubError(
            "The Hub rejected the token (401): it is invalid or expired; create a new one at "
            "https://huggingface.co/settings/tokens",
            "unauthorized",
        )
    if status == 403:
        return HubError(
            "The Hub refused access (403): the token lacks the permission this needs", "forbidden"
        )
    if status == 429:
        return HubError(
            f"The Hub at {endpoint} is rate-limiting requests (429); wait a minute and try again",
            "rate_limited",
        )
    if status >= 500 or status == 408:
        return HubError(
            f"The Hub at {endpoint} is failing (HTTP {status}); try again later", "server_error"
        )
    return HubError(f"The Hub at {endpoint} answered HTTP {status}", "hub_error")


def _api(endpoint: str, token: str | None) -> HfApi:
    # token=False: never fall back to the server's own token (HF_TOKEN, ~/.cache/huggingface).
    return HfApi(endpoint=endpoint.rstrip("/"), token=token or False, library_name="modeldeck")


# --- config.json ------------------------------------------------------------------------

# Names used for the same fact by different architectures' configs, in order of preference.
_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_key_value_heads": (
        "num_key_value_heads",
        "num_kv_heads",
        "n_head_kv",
        "n_kv_heads",
        "multi_query_group_num",
    ),
    "head_dim": ("head_dim", "kv_channels"),
    "max_position_embeddings": (
        "max_position_embeddings",
        "n_positions",
        "max_seq_len",
        "seq_length",
        "max_sequence_length",
        "n_ctx",
    ),
    "dtype": ("torch_dtype", "dtype"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
    "num_experts_per_token": ("num_experts_per_tok", "experts_per_token", "moe_top_k"),
}
# Where multimodal and wrapper models keep their language model's config.
_NESTED_CONFIGS = ("text_config", "llm_config", "language_config", "text_model_config")


def _first(config: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return None


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_config(config: Mapping[str, Any]) -> ModelConfigFacts:
    """Pick the facts the catalog and the GPU estimate need out of a config.json.

    Facts missing at the top level are taken from a nested language-model config
    (`text_config`, ...), so vision-language models give their text model's figures. The KV head
    count defaults to the attention head count (plain multi-head attention), and the head
    dimension to hidden size / heads.
    """
    nested = next(
        (config[key] for key in _NESTED_CONFIGS if isinstance(config.get(key), Mapping)), None
    )
    used_nested = False

    def fact(name: str) -> Any:
        nonlocal used_nested
        value = _first(config, _CONFIG_KEYS[name])
        if value is None and nested is not None:
            value = _first(nested, _CONFIG_KEYS[name])
            used_nested = used_nested or value is not None
        return value

    layers = _as_int(fact("num_hidden_layers"))
    hidden = _as_int(fact("hidden_size"))
    heads = _as_int(fact("num_attention_heads"))
    kv_heads = _as_int(fact("num_key_value_heads"))
    if kv_heads is None and config.get("multi_query") is True:
        kv_heads = 1  # Falcon-style multi-query attention
    if kv_heads is None:
        kv_heads = heads
    head_dim = _as_int(fact("head_dim"))
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    dtype = fact("dtype")
    architectures = config.get("architectures") or (nested or {}).get("architectures") or []
    model_type = config.get("model_type") or (nested or {}).get("model_type")
    quant = config.get("quantization_config") or (nested or {}).get("quantization_config")
    quantization = None
    if isinstance(quant, Mapping):
        method = quant.get("quant_method")
        bits = quant.get("bits") or quant.get("w_bit")
        quantization = f"{method}-{bits}bit" if method and bits else method
    return ModelConfigFacts(
        architecture=architectures[0] if architectures else None,
        model_type=model_type,
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=_as_int(fact("max_position_embeddings")),
        dtype=str(dtype).removeprefix("torch.") if dtype else None,
        vocab_size=_as_int(fact("vocab_size")),
        num_experts=_as_int(fact("num_experts")),
        num_experts_per_token=_as_int(fact("num_experts_per_token")),
        quantization=quantization,
        nested=used_nested,
    )


# Short dtype names for ModelDetail.dtype, from config spellings and safetensors names.
_SHORT_DTYPES = {
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "f16": "fp16",
    "fp16": "fp16",
    "half": "fp16",
    "float32": "fp32",
    "f32": "fp32",
    "fp32": "fp32",
    "float": "fp32",
    "f8_e4m3": "fp8",
    "f8_e5m2": "fp8",
    "float8_e4m3fn": "fp8",
    "i8": "int8",
    "u8": "int8",
}


def _checkpoint_dtype(config: ModelConfigFacts | None, by_dtype: Mapping[str, int]) -> str | None:
    """The weights' dtype: config.json's, else the one most safetensors parameters are stored in."""
    if config and config.dtype:
        return _SHORT_DTYPES.get(config.dtype.lower(), config.dtype.lower())
    if by_dtype:
        main = max(by_dtype.items(), key=lambda item: item[1])[0]
        return _SHORT_DTYPES.get(main.lower(), main.lower())
    return None


# --- public functions --------------------------------------------------------------------


def _gated(value: Any) -> tuple[bool, str | None]:
    if isinstance(value, str) and value:
        return True, value
    return bool(value), None


def search_models(
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    query: str = "",
    task: str | None = None,
    library: str | None = None,
    author: str | None = None,
    sort: SearchSort = "downloads",
    limit: int = 20,
    page: int = 1,
    timeout: float = DEFAULT_TIMEOUT,
) -> SearchPage:
    """Search models on the Hub, most downloaded (or liked, trending, recent) first.

    Pagination: the Hub pages with an opaque cursor in a `Link: rel="next"` header, and
    `HfApi.list_models` follows it but exposes neither a cursor nor an offset. So page N asks
    for the first N × limit + 1 results (the extra one says whether a next page exists) and
    keeps the last `limit`; HfApi follows the Hub's `Link` pages when that exceeds one of them.
    Cheap for the first pages a person browses; pages beyond MAX_SEARCH_RESULTS are not offered.
    """
    if sort not in _SORTS:
        raise ValueError(f"sort must be one of {', '.join(_SORTS)}")
    if not 1 <= limit <= 100:
        raise ValueError("limit must be between 1 and 100")
    if page < 1:
        raise ValueError("page must be 1 or more")
    offset = (page - 1) * limit
    if offset >= MAX_SEARCH_RESULTS:
        return SearchPage(items=(), page=page, page_size=limit, has_next=False)
    wanted = offset + limit + 1
    api = _api(endpoint, token)
    try:
        with _bounded(endpoint, timeout):
            results = list(
                api.list_models(
                    search=query.strip() or None,
                    pipeline_tag=task or None,
                    filter=library or None,
                    author=author or None,
                    sort=_SORTS[sort],  # type: ignore[arg-type]
                    limit=wanted,
                    expand=_SEARCH_EXPAND,  # type: ignore[arg-type]
                )
            )
    except Exception as exc:
        raise _to_hub_error(exc, endpoint=endpoint, timeout=timeout, token=token) from exc
    items = []
    for info in results[offset : offset + limit]:
        gated, gated_mode = _gated(info.gated)
        items.append(
            HubModel(
                repo_id=info.id,
                author=info.author or (info.id.split("/")[0] if "/" in info.id else None),
                task=info.pipeline_tag,
                library=info.library_name,
                downloads=info.downloads or 0,
                likes=info.likes or 0,
                gated=gated,
                gated_mode=gated_mode,
                last_modified=info.last_modified,
                tags=tuple(info.tags or ()),
            )
        )
    has_next = len(results) > offset + limit and offset + limit < MAX_SEARCH_RESULTS
    return SearchPage(items=tuple(items), page=page, page_size=limit, has_next=has_next)


def model_detail(
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    repo_id: str,
    revision: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    work_dir: str | Path | None = None,
) -> ModelDetail:
    """Everything the catalog records about a model at a revision (default: main's latest commit).

    Reads the model's Hub metadata with file sizes and safetensors parameter counts, then
    downloads its config.json at the same commit for the architecture facts. The download goes
    to a fresh temporary directory (under `work_dir` if given) that is removed afterwards:
    nothing is left in the user's Hugging Face cache, and a cached copy can never stand in for
    a gated file the token no longer has access to.
    """
    api = _api(endpoint, token)
    try:
        with _bounded(endpoint, timeout):
            info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
            if not info.sha:
                raise HubError(
                    f"The Hub at {endpoint} did not say which commit {repo_id} is at",
                    "bad_response",
                )
            siblings = info.siblings or []
            config = None
            if any(s.rfilename == "config.json" for s in siblings):
                raw = _download_json(api, repo_id, "config.json", info.sha, work_dir)
                config = parse_config(raw) if isinstance(raw, Mapping) else None
    except Exception as exc:
        raise _to_hub_error(
            exc, endpoint=endpoint, timeout=timeout, token=token, repo_id=repo_id, revision=revision
        ) from exc

    by_dtype = dict(info.safetensors.parameters) if info.safetensors else {}
    gated, gated_mode = _gated(info.gated)
    card = info.card_data
    license_ = getattr(card, "license", None) if card is not None else None
    if not license_:
        license_ = next(
            (t.split(":", 1)[1] for t in info.tags or () if t.startswith("license:")), None
        )
    return ModelDetail(
        repo_id=info.id,
        revision=revision,
        sha=info.sha,
        license=license_ if isinstance(license_, str) else None,
        gated=gated,
        gated_mode=gated_mode,
        private=bool(info.private),
        task=info.pipeline_tag,
        library=info.library_name,
        tags=tuple(info.tags or ()),
        downloads=info.downloads or 0,
        likes=info.likes or 0,
        last_modified=info.last_modified,
        parameters=info.safetensors.total if info.safetensors else None,
        parameters_by_dtype=by_dtype,
        dtype=_checkpoint_dtype(config, by_dtype),
        files=tuple(
            HubFile(path=s.rfilename, size=s.size, lfs=s.lfs is not None) for s in siblings
        ),
        config=config,
    )


def _download_json(
    api: HfApi, repo_id: str, filename: str, sha: str, work_dir: str | Path | None
) -> Any:
    with tempfile.TemporaryDirectory(prefix="modeldeck-hub-", dir=work_dir) as cache_dir:
        try:
            path = api.hf_hub_download(repo_id, filename, revision=sha, cache_dir=cache_dir)
        except RemoteEntryNotFoundError:
            return None
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None


def pin_revision(
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    token: str | None = None,
    repo_id: str,
    revision: str = "main",
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """The commit sha a branch, tag or short sha points to now, for an immutable deployment."""
    api = _api(endpoint, token)
    try:
        with _bounded(endpoint, timeout):
            info = api.model_info(repo_id, revision=revision, expand=["sha"], timeout=timeout)
    except Exception as exc:
        raise _to_hub_error(
            exc, endpoint=endpoint, timeout=timeout, token=token, repo_id=repo_id, revision=revision
        ) from exc
    if not info.sha:
        raise HubError(
            f"The Hub at {endpoint} did not say which commit {repo_id} is at", "bad_response"
        )
    return info.sha


def check_token(
    *, endpoint: str = DEFAULT_ENDPOINT, token: str | None, timeout: float = DEFAULT_TIMEOUT
) -> TokenCheck:
    """Ask the Hub who a token belongs to. Never raises: `ok` and `message` say how it went."""
    if not token or not token.strip():
        return TokenCheck(ok=False, code="no_token", message="No Hugging Face token is set")
    api = _api(endpoint, token.strip())
    try:
        with _bounded(endpoint, timeout):
            who = api.whoami(token=token.strip())
    except Exception as exc:
        error = _to_hub_error(exc, endpoint=endpoint, timeout=timeout, token=token)
        return TokenCheck(ok=False, code=error.code, message=error.message)
    name = who.get("name")
    auth = who.get("auth") or {}
    role = (auth.get("accessToken") or {}).get("role")
    orgs = tuple(o.get("name", "") for o in who.get("orgs") or () if isinstance(o, Mapping))
    role_text = f" ({role} access)" if role else ""
    return TokenCheck(
        ok=True,
        code=None,
        message=f"Token works: signed in to {endpoint} as {name}{role_text}",
        user=name,
        role=role,
        orgs=orgs,
    )
