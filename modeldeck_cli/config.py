"""Where the CLI keeps its URL and token: $XDG_CONFIG_HOME/modeldeck/config.json (~/.config/…), mode 0600."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


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


def save(settings: Settings) -> Path:
    """Write the file readable by its owner only (it holds a token): 0700 folder, 0600 file."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config_path()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(settings.__dict__, fh, indent=2)
    os.chmod(tmp, 0o600)  # an existing file keeps its old mode through O_CREAT
    os.replace(tmp, path)
    return path


def resolve(url: str | None = None, token: str | None = None) -> Settings:
    """Flags first, then MODELDECK_URL / MODELDECK_TOKEN, then the config file."""
    stored = load()
    return Settings(
        url=(url or os.environ.get("MODELDECK_URL") or stored.url).rstrip("/"),
        token=token or os.environ.get("MODELDECK_TOKEN") or stored.token,
        organization=stored.organization,
        username=stored.username,
    )
