"""TorchServe for uploaded `.mar` model archives: an init container fetches the archive from
ModelDeck's artifact route (a short-lived signed URL kept in a Secret) and checks its sha256;
TorchServe then serves it at /predictions/<served name> and /explanations/<served name>.

Engine facts and their sources:
- image `pytorch/torchserve:<version>-gpu|-cpu`, whose own `/home/model-server/config.properties`
  listens on 0.0.0.0:8080 (inference), :8081 (management), :8082 (metrics)
  (https://github.com/pytorch/serve/blob/master/docker/README.md, docker/config.properties);
- `torchserve --start --foreground --ncs --model-store DIR --models NAME=FILE.mar --ts-config F`
  (https://pytorch.org/serve/server.html "Command Line Interface", ts/arg_parser.py);
- token authorization is on by default since 0.11 with keys TorchServe generates itself, so it
  is turned off with `--disable-token-auth` (https://pytorch.org/serve/token_authorization_api.html)
  and ModelDeck's auth proxy checks the deployment's own credential instead (renderers/exposure.py);
  the model-registration API stays off (its default, https://pytorch.org/serve/model_api_control.html);
- inference API: `GET /ping`, `POST /predictions/{model}`, `POST /explanations/{model}`
  (https://pytorch.org/serve/inference_api.html).
"""

from __future__ import annotations

import re

from .common import Engine, EngineParts
from .input import RenderSpec, SpecError

ENGINE_NAME = "torchserve"
DEFAULT_PORT = 8080
HEALTH_PATH = "/ping"
MODEL_STORE = "/home/model-server/model-store"
IMAGE_CONFIG = "/home/model-server/config.properties"  # the image's own (0.0.0.0:8080)
ARCHIVE_FILE = "model.mar"
STORE_VOLUME = "model-store"
# A small image with curl and busybox's sha256sum (Alpine based).
FETCH_IMAGE = "curlimages/curl:8.11.1"
FETCH_CONTAINER = "fetch-model"
ARTIFACT_URL_ENV = "MODELDECK_ARTIFACT_URL"
ARTIFACT_URL_KEY = "url"
ARTIFACT_SCHEME = "artifact://"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
RESERVED_FLAGS = frozenset(
    {"--model-store", "--models", "--ts-config", "--foreground", "--start", "--stop"}
)

# sha256sum -c reads "<hash>  <file>"; a mismatch fails the init container and the pod with it.
_FETCH_SCRIPT = (
    'set -eu; curl -fsS --retry 3 -o "{path}" "$' + ARTIFACT_URL_ENV + '"; '
    'echo "$MODEL_SHA256  {path}" | sha256sum -c -'
)


def artifact_url_secret_name(deployment_name: str) -> str:
    return f"modeldeck-artifact-{deployment_name}"


def build(spec: RenderSpec) -> EngineParts:
    path = f"/model-store/{ARCHIVE_FILE}"
    fetch = {
        "name": FETCH_CONTAINER,
        "image": FETCH_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", _FETCH_SCRIPT.format(path=path)],
        "env": [
            {"name": "MODEL_SHA256", "value": spec.model_sha256 or ""},
            {
                "name": ARTIFACT_URL_ENV,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": spec.artifact_url_secret
                        or artifact_url_secret_name(spec.deployment_name),
                        "key": ARTIFACT_URL_KEY,
                    }
                },
            },
        ],
        "volumeMounts": [{"name": STORE_VOLUME, "mountPath": "/model-store"}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    args = [
        "--start", "--foreground", "--ncs", "--disable-token-auth",
        "--ts-config", IMAGE_CONFIG,
        "--model-store", MODEL_STORE,
        "--models", f"{spec.served_name()}={ARCHIVE_FILE}",
        *spec.bundle_args, *spec.extra_args,
    ]  # fmt: skip
    return EngineParts(
        command=("torchserve",),
        args=tuple(args),
        secret_env=dict(spec.secret_env),
        volumes=({"name": STORE_VOLUME, "emptyDir": {}},),
        volume_mounts=({"name": STORE_VOLUME, "mountPath": MODEL_STORE, "readOnly": True},),
        init_containers=(fetch,),
    )


def validate(spec: RenderSpec) -> None:
    if spec.model_source != "custom" or not spec.model_ref.startswith(ARTIFACT_SCHEME):
        raise SpecError(
            "model_ref",
            "TorchServe serves .mar archives uploaded to the catalog; upload the .mar file",
        )
    if not spec.model_ref.lower().endswith(".mar"):
        raise SpecError(
            "model_ref", "TorchServe serves .mar model archives; this upload is not one"
        )
    if not _SHA256.match(spec.model_sha256 or ""):
        raise SpecError("model_ref", "the uploaded archive has no sha256 to check; upload it again")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", spec.served_name()):
        raise SpecError(
            "served_model_name", "TorchServe model names are letters, digits, '.', '_' and '-'"
        )
    for flag in (*spec.bundle_args, *spec.extra_args):
        if flag.split("=", 1)[0] in RESERVED_FLAGS:
            raise SpecError(
                "extra_args", f"{flag.split('=', 1)[0]} is set by ModelDeck for TorchServe"
            )
    if spec.nim_profile:
        raise SpecError("nim_profile", "only applies to NIM")


ENGINE = Engine(
    name=ENGINE_NAME,
    default_port=DEFAULT_PORT,
    startup_path=HEALTH_PATH,
    readiness_path=HEALTH_PATH,
    liveness_path=HEALTH_PATH,
    cache_mount_path="/home/model-server/tmp",  # where TorchServe unpacks the archive
    owned_env=frozenset(),
    validate=validate,
    build=build,
)
