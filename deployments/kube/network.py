"""Which addresses a compute pool may make the ModelDeck server call (server-side request rules)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def is_public_address(text: str) -> bool:
    """The one rule for an address the server may call on a tenant's behalf: on the public
    internet (not loopback, link-local — cloud metadata services live there —, private, shared,
    reserved or multicast). Check-time (`non_public_addresses`) and connect-time
    (gateway/upstream.py's resolver) both ask this."""
    addr = _ip(text)
    if addr is None or not addr.is_global or addr.is_multicast:
        return False
    embedded = _embedded_ipv4(addr)
    return embedded is None or (embedded.is_global and not embedded.is_multicast)


NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: a NAT64 gateway forwards to the IPv4 inside


def _embedded_ipv4(addr) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to somewhere (6to4, NAT64, IPv4-compatible): Python
    calls 2002:7f00:1:: or 64:ff9b::7f00:1 global, yet they lead to 127.0.0.1 where routed."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in NAT64 or int(addr) >> 32 == 0:  # NAT64, or ::a.b.c.d (IPv4-compatible, deprecated)
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def is_loopback_host(host: str) -> bool:
    # "localhost." is the same name fully qualified; RFC 6761 gives every *.localhost to loopback.
    host = (host or "").strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def non_public_addresses(host: str, port: int | None) -> list[str]:
    """The addresses `host` resolves to that are not on the public internet: loopback,
    link-local (cloud metadata services live there), private, shared, reserved, multicast."""
    addresses = _addresses((host or "").strip("[]"), port)
    if addresses is None:
        return []  # unresolvable: the connection itself will say so
    return [str(_ip(text) or text) for text in addresses if not is_public_address(text)]


def _addresses(host: str, port: int | None) -> list[str] | None:
    """What `host` is called at: itself when an IP literal, else its addresses (None when the name
    does not resolve)."""
    ip = _ip(host)
    if ip is not None:
        return [str(ip)]
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return sorted({info[4][0] for info in infos})


def _host_port(server: str) -> tuple[str, int | None]:
    parts = urlsplit(server)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").strip("[]"), port


def _private_refusal(bad: list[str]) -> str:
    return (
        f"resolves to {', '.join(bad[:3])}, a loopback, link-local or private address. Organizations "
        "can only register clusters at public addresses; a platform operator can allow private "
        "addresses for this pool."
    )


def public_address_refusal(server: str) -> str:
    """Why a server URL may not be used by a pool that must be public; "" when it may."""
    bad = non_public_addresses(*_host_port(server))
    return _private_refusal(bad) if bad else ""


def pinned_public_server(server: str) -> tuple[str, str]:
    """(the server URL with its host replaced by the one public address it is called at, the
    refusal) — one lookup, checked and then used, so the connection can't resolve the name to
    another address in between (DNS rebinding). A name that doesn't resolve is refused too."""
    host, port = _host_port(server)
    addresses = _addresses(host, port)
    if not addresses:
        return "", f"{host} does not resolve; check the name in the kubeconfig's server address."
    bad = [text for text in addresses if not is_public_address(text)]
    if bad:
        return "", f"{host} {_private_refusal(bad)}"
    shown = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
    return urlsplit(server)._replace(netloc=f"{shown}:{port}" if port else shown).geturl(), ""


def sandbox_urls() -> list[str]:
    """The sandbox Kubernetes APIs ModelDeck itself started (`make run` starts the first)."""
    urls = list(getattr(settings, "SANDBOX_KUBE_URLS", None) or [settings.SANDBOX_KUBE_URL])
    return [u.rstrip("/") for u in urls if u]


def sandbox_url_refusal(url: str) -> str:
    """Why a sandbox pool may not use `url` (empty means the built-in sandbox); "" when it may."""
    if not getattr(settings, "SANDBOX_POOLS_ENABLED", False):
        return (
            "Sandbox pools exist only in the embedded mode (make run without REDIS_URL); register "
            "a real cluster by kubeconfig instead."
        )
    url = (url or settings.SANDBOX_KUBE_URL or "").rstrip("/")
    host = urlsplit(url).hostname or ""
    if not is_loopback_host(host):
        return "A sandbox pool only connects to a loopback address (127.0.0.1) of this machine."
    if url not in sandbox_urls():
        return (
            f"{url} is not a sandbox ModelDeck started; leave the API URL empty to use the "
            f"built-in sandbox ({settings.SANDBOX_KUBE_URL})."
        )
    return ""
