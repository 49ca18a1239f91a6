"""How a deployment is reached and who may call it: the engine credential, Ingress / HTTPRoute,
the NetworkPolicy, and the header-checking proxy for engines that can't check a key themselves.

Pure functions like the engine renderers; the credential's value never passes through here
except in `credential_secret()`, which the driver calls with the value it decrypted.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
from typing import Any

from .common import (
    LABEL_DEPLOYMENT_ID,
    SERVICE_PORT,
    deployment_labels,
    merge_metadata,
)
from .input import RenderSpec, SpecError, is_dns1123_subdomain

CREDENTIAL_KEY = "api-key"
CREDENTIAL_PREFIX = "modeldeck-engine-key-"

# Where each engine reads the key it then requires as `Authorization: Bearer <key>`:
# - vLLM 0.8.5: `--api-key` or VLLM_API_KEY (vllm/entrypoints/openai/api_server.py: `token :=
#   args.api_key or envs.VLLM_API_KEY`; only /v1 paths are checked, so /health probes pass).
# - TGI 3.0.1: launcher `#[clap(long, env)] api_key` -> env API_KEY, passed to the router as
#   --api-key (launcher/src/main.rs); the router checks the Bearer header (router/src/server.rs),
#   /health stays open.
# - TEI: `--api-key <API_KEY> [env: API_KEY=]` (docs/source/en/cli_arguments.md), Bearer header.
# From the env, never the args: the value stays in the Secret, out of `kubectl get -o yaml`.
CREDENTIAL_ENV = {"vllm": "VLLM_API_KEY", "tgi": "API_KEY", "tei": "API_KEY"}

# NIM for LLMs has no API key setting, so a small nginx in the pod checks the header and proxies
# to NIM on localhost; the Service and the NetworkPolicy point at it instead of NIM's port.
# nginx-unprivileged runs as uid 101 and may write its config under /tmp. The generated script
# was run with Debian's nginx 1.22 in front of the sandbox engine: no key 401, a wrong key 401,
# the right key 200 with the engine's answer.
AUTH_PROXY_NAME = "auth-proxy"
AUTH_PROXY_IMAGE = "nginxinc/nginx-unprivileged:1.27-alpine"
AUTH_PROXY_PORT = 8480
AUTH_PROXY_ENV = "MODELDECK_ENGINE_KEY"
AUTH_PROXY_UID = 101
_NGINX_CONF = """pid /tmp/nginx.pid;
events {{}}
http {{
  client_body_temp_path /tmp/client_body; proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi; uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;
  client_max_body_size 16m;
  server {{
    listen {port};
    location / {{
      if ($http_authorization != "Bearer ${env}") {{ return 401; }}
      proxy_pass http://127.0.0.1:{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"""


def needs_auth_proxy(spec: RenderSpec) -> bool:
    return spec.engine_credential and spec.engine not in CREDENTIAL_ENV


def credential_secret_name(deployment_name: str) -> str:
    """A name of ModelDeck's own: never one a user or another tool may already have."""
    return f"{CREDENTIAL_PREFIX}{deployment_name}"


def check_credential_env(spec: RenderSpec) -> None:
    """Every deployment ModelDeck pushes carries a credential, so the variable is refused at
    save time too, whether or not this spec asks for one."""
    name = CREDENTIAL_ENV.get(spec.engine, AUTH_PROXY_ENV)
    if name in spec.env or name in spec.secret_env:
        raise SpecError("env", f"{name} is set by ModelDeck (the engine's credential)")


def with_credential(spec: RenderSpec) -> RenderSpec:
    """The spec with the engine's key env var taken from the deployment's credential Secret."""
    if not spec.engine_credential or spec.engine not in CREDENTIAL_ENV:
        return spec
    name = CREDENTIAL_ENV[spec.engine]
    check_credential_env(spec)
    secret_env = {**spec.secret_env, name: (credential_secret_name(spec.deployment_name), CREDENTIAL_KEY)}
    return dataclasses.replace(spec, secret_env=secret_env)


def credential_secret(spec: RenderSpec, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": credential_secret_name(spec.deployment_name),
            "namespace": spec.namespace,
            "labels": deployment_labels(spec),
        },
        "type": "Opaque",
        "data": {CREDENTIAL_KEY: base64.b64encode(value.encode()).decode()},
    }


def auth_proxy_container(spec: RenderSpec, upstream_port: int) -> dict[str, Any]:
    conf = _NGINX_CONF.format(port=AUTH_PROXY_PORT, upstream=upstream_port, env="{" + AUTH_PROXY_ENV + "}")
    # The shell expands ${MODELDECK_ENGINE_KEY} (from the Secret) into the config at start; the
    # key is URL-safe base64, so it needs no quoting inside nginx's string.
    script = f"cat > /tmp/nginx.conf <<EOF\n{conf.replace('$http', chr(92) + '$http')}EOF\nexec nginx -c /tmp/nginx.conf -g 'daemon off;'"
    return {
        "name": AUTH_PROXY_NAME,
        "image": AUTH_PROXY_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", script],
        "ports": [{"name": "auth", "containerPort": AUTH_PROXY_PORT, "protocol": "TCP"}],
        "env": [
            {
                "name": AUTH_PROXY_ENV,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": credential_secret_name(spec.deployment_name),
                        "key": CREDENTIAL_KEY,
                    }
                },
            }
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsUser": AUTH_PROXY_UID,
            "runAsGroup": AUTH_PROXY_UID,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def add_auth_proxy(deployment: dict[str, Any], spec: RenderSpec, upstream_port: int) -> dict[str, Any]:
    out = copy.deepcopy(deployment)
    out["spec"]["template"]["spec"]["containers"].append(auth_proxy_container(spec, upstream_port))
    return out


def serving_port(spec: RenderSpec) -> int | str:
    """What the Service targets: the header-checking proxy when there is one, else the engine."""
    return AUTH_PROXY_PORT if needs_auth_proxy(spec) else "http"


# --- Routes -----------------------------------------------------------------------------------


def host_for(deployment_name: str, namespace: str, base_host: str) -> str:
    """`<deployment>-<namespace>.<base host>`: one DNS label under the base host, so one wildcard
    record and one wildcard certificate cover every deployment. The gateway computes the same."""
    label = f"{deployment_name}-{namespace}"
    if len(label) > 63:
        digest = hashlib.sha256(label.encode()).hexdigest()[:8]
        label = f"{label[:54]}-{digest}"
    return f"{label}.{base_host}"


def route_host(spec: RenderSpec) -> str:
    assert spec.exposure is not None
    return host_for(spec.deployment_name, spec.namespace, spec.exposure.base_host)


def validate_exposure(spec: RenderSpec) -> None:
    exposure = spec.exposure
    if exposure is None or exposure.mode == "in_cluster":
        return
    if exposure.mode not in ("ingress", "gateway_api"):
        raise SpecError("exposure", "must be in_cluster, ingress or gateway_api")
    if not is_dns1123_subdomain(exposure.base_host):
        raise SpecError("exposure", "the pool's base host must be a DNS name such as models.example.com")
    if exposure.mode == "ingress" and exposure.ingress_class and not is_dns1123_subdomain(exposure.ingress_class):
        raise SpecError("exposure", "the pool's ingress class is not a valid name")
    if exposure.mode == "gateway_api" and not (exposure.gateway_name and exposure.gateway_namespace):
        raise SpecError("exposure", "the pool needs the Gateway's name and namespace")


def _meta(spec: RenderSpec, name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": spec.namespace,
        "labels": merge_metadata(deployment_labels(spec), spec.labels),
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def build_ingress(spec: RenderSpec) -> dict[str, Any]:
    exposure = spec.exposure
    assert exposure is not None
    host = route_host(spec)
    ingress_spec: dict[str, Any] = {}
    if exposure.ingress_class:
        ingress_spec["ingressClassName"] = exposure.ingress_class
    if exposure.tls_secret:
        ingress_spec["tls"] = [{"hosts": [host], "secretName": exposure.tls_secret}]
    ingress_spec["rules"] = [
        {
            "host": host,
            "http": {
                "paths": [
                    {
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {
                            "service": {"name": spec.deployment_name, "port": {"number": SERVICE_PORT}}
                        },
                    }
                ]
            },
        }
    ]
    # ingress-nginx (other controllers ignore these): stream tokens as they come, allow long
    # generations, and large prompts.
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "300",
        "nginx.ingress.kubernetes.io/proxy-body-size": "16m",
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(spec, spec.deployment_name, annotations),
        "spec": ingress_spec,
    }


def build_http_route(spec: RenderSpec) -> dict[str, Any]:
    """gateway.networking.k8s.io/v1 HTTPRoute attached to the pool's Gateway."""
    exposure = spec.exposure
    assert exposure is not None
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(spec, spec.deployment_name),
        "spec": {
            "parentRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": exposure.gateway_name,
                    "namespace": exposure.gateway_namespace,
                }
            ],
            "hostnames": [route_host(spec)],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{"name": spec.deployment_name, "port": SERVICE_PORT}],
                    "timeouts": {"request": "300s"},
                }
            ],
        },
    }


def build_network_policy(spec: RenderSpec, engine_port: int) -> dict[str, Any]:
    """Only the ingress controller / gateway proxies and ModelDeck reach the serving port."""
    exposure = spec.exposure
    assert exposure is not None
    port = AUTH_PROXY_PORT if needs_auth_proxy(spec) else engine_port
    peers = [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": sorted(set(exposure.admit_namespaces)),
                    }
                ]
            }
        }
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, f"{spec.deployment_name}-engine"),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_DEPLOYMENT_ID: str(spec.deployment_id)}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": port}]}],
        },
    }


def exposure_objects(spec: RenderSpec, engine_port: int) -> list[dict[str, Any]]:
    """The route (if the pool is exposed outside the cluster) and the NetworkPolicy."""
    exposure = spec.exposure
    if exposure is None:
        return []
    objects: list[dict[str, Any]] = []
    if exposure.mode == "ingress":
        objects.append(build_ingress(spec))
    elif exposure.mode == "gateway_api":
        objects.append(build_http_route(spec))
    if exposure.admit_namespaces:
        objects.append(build_network_policy(spec, engine_port))
    return objects
