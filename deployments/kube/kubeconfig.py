"""A tenant's kubeconfig reduced to what ModelDeck needs: server, CA data and inline credentials.

A kubeconfig is untrusted input. The official loaders run `exec` plugins and `auth-provider`
commands, read `tokenFile` and the other path fields, go through `proxy-url` and refresh OIDC
tokens at the issuer's URL: each of those would let whoever pastes a kubeconfig run programs,
read files or reach other addresses as the ModelDeck server. So nothing here hands tenant data to
`kubernetes.config`; a kubeconfig is parsed, every such field is refused by name, and what is left
(`ReducedKubeconfig`) is the only thing a client is ever built from.

Field names are those of the kubeconfig v1 reference (k8s.io/client-go/tools/clientcmd/api/v1
types.go; https://kubernetes.io/docs/reference/config-api/kubeconfig.v1/), plus the camelCase
spellings the Python client's loader also accepts (kubernetes/config/kube_config.py reads
`tokenFile` and `idp-issuer-url` inside `auth-provider.config`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from console import yamlsafe

MAX_KUBECONFIG_BYTES = 256 * 1024

# Fields that make a client run a program, read a file of the server or reach another URL:
# refused wherever they appear, with the reason a user can act on.
_USER_REFUSED = {
    "exec": "ModelDeck never runs programs named in a kubeconfig (credential plugins).",
    "auth-provider": "ModelDeck never runs auth providers (OIDC refresh, gcp, azure): they run "
    "commands or call other URLs.",
    "tokenFile": "ModelDeck never reads files of its server; paste the token itself as `token`.",
    "token-file": "ModelDeck never reads files of its server; paste the token itself as `token`.",
    "client-certificate": "ModelDeck never reads files of its server; use client-certificate-data.",
    "client-key": "ModelDeck never reads files of its server; use client-key-data.",
    "username": "Kubernetes removed basic authentication (v1.19); use a token or a client certificate.",
    "password": "Kubernetes removed basic authentication (v1.19); use a token or a client certificate.",
    "as": "ModelDeck does not impersonate; give the credentials of the identity itself.",
    "as-uid": "ModelDeck does not impersonate; give the credentials of the identity itself.",
    "as-groups": "ModelDeck does not impersonate; give the credentials of the identity itself.",
    "as-user-extra": "ModelDeck does not impersonate; give the credentials of the identity itself.",
}
_CLUSTER_REFUSED = {
    "certificate-authority": "ModelDeck never reads files of its server; use certificate-authority-data.",
    "proxy-url": "ModelDeck does not connect through a proxy named in a kubeconfig.",
}
# Known and harmless, but nothing ModelDeck uses: dropped from the stored copy.
_USER_IGNORED = {"extensions"}
_CLUSTER_IGNORED = {"extensions", "disable-compression"}
_FLATTEN_HINT = " Tip: `kubectl config view --minify --flatten` puts the data inline."
_TOKEN = re.compile(r"^[\x21-\x7e]{1,8192}$")  # printable ASCII, no spaces: a header value
_HOSTNAME = re.compile(r"^[A-Za-z0-9.-]{1,253}$")


class KubeconfigRefused(ValueError):
    """The kubeconfig can't be used; `field` is the kubeconfig field at fault (e.g.
    `users[admin].user.exec`) and `message` says why in words a user can act on."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def text(self) -> str:
        return str(self)


@dataclass(frozen=True)
class ReducedKubeconfig:
    """Everything ModelDeck takes from a kubeconfig: one server and one identity, inline."""

    server: str
    certificate_authority_data: str = ""  # base64 PEM, as in a kubeconfig
    tls_server_name: str = ""
    insecure_skip_tls_verify: bool = False
    token: str = ""
    client_certificate_data: str = ""  # base64 PEM
    client_key_data: str = ""  # base64 PEM

    @property
    def host(self) -> str:
        return urlsplit(self.server).hostname or ""

    def to_yaml(self) -> str:
        """The stored copy: a minimal kubeconfig with one cluster, user and context."""
        cluster: dict[str, Any] = {"server": self.server}
        if self.certificate_authority_data:
            cluster["certificate-authority-data"] = self.certificate_authority_data
        if self.tls_server_name:
            cluster["tls-server-name"] = self.tls_server_name
        if self.insecure_skip_tls_verify:
            cluster["insecure-skip-tls-verify"] = True
        user: dict[str, Any] = {}
        if self.token:
            user["token"] = self.token
        if self.client_certificate_data:
            user["client-certificate-data"] = self.client_certificate_data
            user["client-key-data"] = self.client_key_data
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "pool", "cluster": cluster}],
            "users": [{"name": "pool", "user": user}],
            "contexts": [{"name": "pool", "context": {"cluster": "pool", "user": "pool"}}],
            "current-context": "pool",
        }
        return yaml.safe_dump(doc, sort_keys=False)


def _named(items: Any, section: str) -> list[tuple[str, str, dict[str, Any]]]:
    """[(label for messages, name, body)] of a kubeconfig list such as `users`."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise KubeconfigRefused(section, "must be a list.")
    inner = section[:-1] if section != "clusters" else "cluster"
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise KubeconfigRefused(f"{section}[{i}]", "must be a mapping with name and "
                                    f"{inner}.")  # fmt: skip
        name = item.get("name")
        label = f"{section}[{name}]" if isinstance(name, str) and name else f"{section}[{i}]"
        body = item.get(inner)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise KubeconfigRefused(f"{label}.{inner}", "must be a mapping.")
        out.append((label, name if isinstance(name, str) else "", body))
    return out


def _refuse_dangerous(users: list, clusters: list) -> None:
    """Any field that runs, reads or reaches, in any entry (used or not): the whole document is
    tenant input, and naming the field is clearer than silently dropping it."""
    for label, _name, user in users:
        for key in user:
            if key in _USER_REFUSED:
                hint = _FLATTEN_HINT if key in ("tokenFile", "client-certificate", "client-key") else ""
                raise KubeconfigRefused(f"{label}.user.{key}", _USER_REFUSED[key] + hint)
    for label, _name, cluster in clusters:
        for key in cluster:
            if key in _CLUSTER_REFUSED:
                hint = _FLATTEN_HINT if key == "certificate-authority" else ""
                raise KubeconfigRefused(f"{label}.cluster.{key}", _CLUSTER_REFUSED[key] + hint)


def _pem_data(value: Any, field: str, marker: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KubeconfigRefused(field, "must be base64-encoded PEM data.")
    text = "".join(value.split())
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigRefused(field, "is not valid base64.") from None
    if f"-----BEGIN {marker}".encode() not in decoded and b"-----BEGIN " not in decoded:
        raise KubeconfigRefused(field, "does not hold PEM data (-----BEGIN …).")
    return text


def _server(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KubeconfigRefused(field, "is required: the URL of the cluster's API server.")
    server = value.strip()
    try:
        parts = urlsplit(server)
        port = parts.port
    except ValueError:
        raise KubeconfigRefused(field, "is not a valid URL.") from None
    if parts.scheme not in ("https", "http"):
        raise KubeconfigRefused(field, "must be an https:// URL of the cluster's API server.")
    if not parts.hostname:
        raise KubeconfigRefused(field, "has no host name.")
    if parts.username or parts.password:
        raise KubeconfigRefused(field, "must not carry a user name or password.")
    if parts.query or parts.fragment:
        raise KubeconfigRefused(field, "must not have a query (?) or fragment (#).")
    if port == 0:
        raise KubeconfigRefused(field, "has no usable port.")
    return server.rstrip("/")


def _select(doc: dict[str, Any], contexts: list) -> tuple[str, str, str]:
    """(context label, cluster name, user name) of the context ModelDeck uses."""
    current = doc.get("current-context")
    if current is not None and not isinstance(current, str):
        raise KubeconfigRefused("current-context", "must be the name of a context.")
    if current:
        matches = [c for c in contexts if c[1] == current]
        if not matches:
            raise KubeconfigRefused("current-context", f"names “{current[:100]}”, which is not in contexts.")
        chosen = matches[0]
    elif len(contexts) == 1:
        chosen = contexts[0]
    elif not contexts:
        return "", "", ""
    else:
        raise KubeconfigRefused(
            "current-context", "is required when the kubeconfig has several contexts: it says which one to use."
        )
    label, _name, body = chosen
    cluster, user = body.get("cluster"), body.get("user")
    if not isinstance(cluster, str) or not cluster:
        raise KubeconfigRefused(f"{label}.context.cluster", "must name one of the clusters.")
    if user is not None and not isinstance(user, str):
        raise KubeconfigRefused(f"{label}.context.user", "must name one of the users.")
    return label, cluster, user or ""


def reduce_kubeconfig(data: str | dict[str, Any]) -> ReducedKubeconfig:
    """Parse (when text) and reduce a kubeconfig; raises KubeconfigRefused naming the field.

    Nothing is executed, read or fetched here: the document is only looked at.
    """
    if isinstance(data, str):
        if len(data.encode("utf-8", "replace")) > MAX_KUBECONFIG_BYTES:
            raise KubeconfigRefused("", "The kubeconfig is larger than a kubeconfig can be (256 KiB).")
        try:
            doc = yamlsafe.load(data)
        except yamlsafe.YamlRefused as exc:
            # Only the position: the YAML error's snippet would show the line, token and all.
            where = f" ({exc.where})" if exc.where else ""
            if exc.syntax:
                raise KubeconfigRefused("", f"The kubeconfig is not valid YAML{where}.") from None
            raise KubeconfigRefused("", f"Line {exc.line}, column {exc.column}: {exc.problem}" if exc.where
                                    else exc.problem) from None
    else:
        doc = data
    if not isinstance(doc, dict):
        raise KubeconfigRefused("", "This does not look like a kubeconfig: it needs a “clusters:” list.")
    clusters = _named(doc.get("clusters"), "clusters")
    users = _named(doc.get("users"), "users")
    contexts = _named(doc.get("contexts"), "contexts")
    if not clusters:
        raise KubeconfigRefused("clusters", "This does not look like a kubeconfig: it needs a “clusters:” list.")
    _refuse_dangerous(users, clusters)

    context_label, cluster_name, user_name = _select(doc, contexts)
    if context_label:
        found = [c for c in clusters if c[1] == cluster_name]
        if not found:
            raise KubeconfigRefused(f"{context_label}.context.cluster", f"names “{cluster_name[:100]}”, which is not in clusters.")
        cluster_label, _n, cluster = found[0]
        user_label, user = "", {}
        if user_name:
            found_users = [u for u in users if u[1] == user_name]
            if not found_users:
                raise KubeconfigRefused(f"{context_label}.context.user", f"names “{user_name[:100]}”, which is not in users.")
            user_label, _n, user = found_users[0]
    else:
        # No contexts at all: a single cluster (and at most a single user) is unambiguous.
        if len(clusters) > 1 or len(users) > 1:
            raise KubeconfigRefused("contexts", "are required when there are several clusters or users.")
        cluster_label, _n, cluster = clusters[0]
        user_label, _n, user = users[0] if users else ("", "", {})

    c = f"{cluster_label}.cluster."
    server = _server(cluster.get("server"), c + "server")
    ca = ""
    if cluster.get("certificate-authority-data"):
        ca = _pem_data(cluster["certificate-authority-data"], c + "certificate-authority-data", "CERTIFICATE")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise KubeconfigRefused(c + "insecure-skip-tls-verify", "must be true or false.")
    if insecure and ca:
        # client-go refuses the same combination ("specifying a root certificates file with the
        # insecure flag is not allowed").
        raise KubeconfigRefused(c + "insecure-skip-tls-verify", "can't be combined with certificate-authority-data.")
    sni = cluster.get("tls-server-name") or ""
    if sni and (not isinstance(sni, str) or not _HOSTNAME.match(sni)):
        raise KubeconfigRefused(c + "tls-server-name", "must be a host name.")

    u = f"{user_label}.user." if user_label else "user."
    token = user.get("token") or ""
    if token and (not isinstance(token, str) or not _TOKEN.match(token.strip())):
        raise KubeconfigRefused(u + "token", "must be a bearer token (printable characters, no spaces).")
    cert = key = ""
    if user.get("client-certificate-data") or user.get("client-key-data"):
        if not user.get("client-certificate-data"):
            raise KubeconfigRefused(u + "client-certificate-data", "is required with client-key-data.")
        if not user.get("client-key-data"):
            raise KubeconfigRefused(u + "client-key-data", "is required with client-certificate-data.")
        cert = _pem_data(user["client-certificate-data"], u + "client-certificate-data", "CERTIFICATE")
        key = _pem_data(user["client-key-data"], u + "client-key-data", "")
    if server.startswith("http://") and (token or cert):
        raise KubeconfigRefused(c + "server", "must be https:// when the kubeconfig carries credentials: "
                                "they would cross the network in clear text.")  # fmt: skip
    for key_name in user:
        if key_name not in {"token", "client-certificate-data", "client-key-data"} | _USER_IGNORED:
            raise KubeconfigRefused(u + key_name, "is not a field ModelDeck understands; remove it.")
    for key_name in cluster:
        if key_name not in {"server", "certificate-authority-data", "insecure-skip-tls-verify",
                            "tls-server-name"} | _CLUSTER_IGNORED:  # fmt: skip
            raise KubeconfigRefused(c + key_name, "is not a field ModelDeck understands; remove it.")
    return ReducedKubeconfig(
        server=server, certificate_authority_data=ca, tls_server_name=sni, insecure_skip_tls_verify=insecure,
        token=token.strip(), client_certificate_data=cert, client_key_data=key,
    )  # fmt: skip
