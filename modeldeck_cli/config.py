"""Where the CLI keeps its URL and token: $XDG_CONFIG_HOME/modeldeck/config.json (~/.config/…), mode 0600;
and, beside it, the short-lived gateway keys `chat` got for deployments (playground-keys.json, 0600)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "modeldeck"


def config_path() -> Path:
    return config_dir() / "config.json"


@dataclass
class Settings:
    url: str = ""
    token: str = ""
    organization: str = ""
    username: str = ""


def load() -> Settings:
    try:
        data = json.loads(config_path().read_text())
    except (OSError, ValueError):
        return Settings()
    if not isinstance(data, dict):
        return Settings()
    return Settings(**{k: str(v) for k, v in data.items() if k in Settings.__dataclass_fields__ and v is not None})


def _write_private(path: Path, data: Any) -> Path:
    """Write a file readable by its owner only (it holds a secret): 0700 folder, 0600 file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o600)  # an existing file keeps its old mode through O_CREAT
    os.replace(tmp, path)
    return path


def save(settings: Settings) -> Path:
    return _write_private(config_path(), settings.__dict__)


def resolve(url: str | None = None, token: str | None = None) -> Settings:
    """Flags first, then MODELDECK_URL / MODELDECK_TOKEN, then the config file."""
    stored = load()
    chosen = token or os.environ.get("MODELDECK_TOKEN") or stored.token
    mine = chosen == stored.token  # another token's organization and user are not the file's
    return Settings(
        url=(url or os.environ.get("MODELDECK_URL") or stored.url).rstrip("/"),
        token=chosen,
        organization=stored.organization if mine else "",
        username=stored.username if mine else "",
    )


# --- short-lived gateway keys for `chat` ------------------------------------------------------


def playground_keys_path() -> Path:
    return config_dir() / "playground-keys.json"


def key_slot(url: str, deployment_id: int, token: str) -> str:
    """Which cached key serves a call: the server, the deployment, and whose REST token asks (a
    digest, never the token), so that another login never uses the previous user's key."""
    who = hashlib.sha256(token.encode()).hexdigest()[:16]
    return f"{url.rstrip('/')} deployment {deployment_id} as {who}"


def _expiry(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _playground_keys() -> dict[str, dict]:
    try:
        data = json.loads(playground_keys_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_playground_key(slot: str, *, min_left: timedelta) -> str | None:
    """The key kept for `slot` if it stays valid for more than `min_left`, else None."""
    entry = _playground_keys().get(slot)
    if not isinstance(entry, dict) or not isinstance(entry.get("api_key"), str):
        return None
    expires = _expiry(entry.get("expires_at"))
    if expires is None or expires - datetime.now(UTC) <= min_left:
        return None
    return entry["api_key"]


def remember_playground_key(slot: str, api_key: str, expires_at: str) -> Path:
    """Keep the key for `slot` (replacing the one before, which the server has revoked), and drop
    the expired ones."""
    now = datetime.now(UTC)
    keys = {name: entry for name, entry in _playground_keys().items()
            if isinstance(entry, dict) and (_expiry(entry.get("expires_at")) or now) > now}  # fmt: skip
    keys[slot] = {"api_key": api_key, "expires_at": expires_at}
    return _write_private(playground_keys_path(), keys)


def forget_playground_keys() -> None:
    playground_keys_path().unlink(missing_ok=True)
