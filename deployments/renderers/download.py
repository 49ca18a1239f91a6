"""The pre-download Job: fills a deployment's model cache PVC once, before the engine's pods start.

What the NIM Operator's NIMCache and KServe's LocalModelCache do, for pools without them: a
Kubernetes Job, run with the engine's own image and downloader, writes the weights into the
cache claim every replica and revision mounts. The driver applies the engine's Deployment only
once the Job is Complete (deployments/tasks.py), so no GPU is held while the weights download,
a slow download never counts against the pods' startup probe or progress deadline, and the
Job controller retries a failed download (backoffLimit) by itself. That is the NIM Operator's
order too: a NIMService waits for its NIMCache to be Ready before it makes its Deployment.

Downloaders, each the engine image's own:
- vLLM and TGI images carry huggingface_hub, whose `huggingface-cli download REPO [FILES...]
  --revision REV` fills the Hub cache under HF_HOME (huggingface_hub/commands/download.py;
  huggingface.co/docs/huggingface_hub/guides/cli). vLLM and TGI then find the snapshot there.
- NIM: `download-to-cache [--profiles ID ...]` writes the profile to NIM_CACHE_PATH
  (docs.nvidia.com/nim/large-language-models/1.3.0/utilities.html, "download-to-cache -h";
  `--profiles, -p` as the NIM utilities pages list it). It needs NGC_API_KEY.
- TEI's image has only its Rust router and no downloader: TEI downloads on its first start,
  into the same claim, and every later start finds the weights there.

Progress: with a ReadWriteMany claim the files are split over an Indexed Job (one index per
part, JOB_COMPLETION_INDEX picks the part), so `status.completedIndexes` says how many of the
files are in the cache from the status sync's one list of Jobs. A ReadWriteOnce claim can only be
mounted on one node at a time, so there the Job is one pod and the sync shows its state.
"""

from __future__ import annotations

import copy
import hashlib
import shlex
from typing import Any

from .common import (
    CACHE_VOLUME,
    HF_CACHE_MOUNT_PATH,
    HF_HOME,
    LABEL_COMPONENT,
    Engine,
    _metadata,
    _node_selector,
    _tolerations,
    deployment_labels,
    merge_metadata,
    model_cache_name,
)
from .input import RenderSpec

COMPONENT_DOWNLOAD = "model-download"
CONTAINER_NAME = "download"
DOWNLOAD_ENGINES = ("vllm", "tgi", "nim")
MAX_PARTS = 16
PARALLEL_PARTS = 4
BACKOFF_LIMIT = 3
# Index -> files, for the sandbox and for people reading the Job: the part's file list.
ANNOTATION_PARTS = "modeldeck.io/download-parts"
ANNOTATION_FILES = "modeldeck.io/download-files"
SHARED_ACCESS_MODES = ("ReadWriteMany", "ReadOnlyMany")


def needs_download_job(spec: RenderSpec, *, operator: bool) -> bool:
    """A plain Deployment (no NIM Operator / KServe: they bring NIMCache / their own storage
    initializer) with a cache claim, of a model an engine image can download by itself."""
    if operator or spec.model_cache is None or spec.engine not in DOWNLOAD_ENGINES:
        return False
    if spec.engine == "nim":
        return spec.model_source == "ngc"
    return spec.model_source == "huggingface"


def parts(spec: RenderSpec) -> list[list[str]]:
    """The files of each Job index: one index for the whole repo on a ReadWriteOnce claim or when
    the catalog lists no files; else up to MAX_PARTS parts, round-robin over the sorted files."""
    files = sorted(spec.download_files)
    if spec.engine == "nim" or not files or spec.model_cache.access_mode not in SHARED_ACCESS_MODES:
        return [files]
    count = min(len(files), MAX_PARTS)
    return [files[i::count] for i in range(count)]


def job_name(spec: RenderSpec) -> str:
    """`<name>-weights-<hash>`: a Job's pod template is immutable, so what it downloads (and with
    which image) is in the name; a revision that changes none of it reuses the finished Job."""
    digest = hashlib.sha256(repr(_identity(spec)).encode()).hexdigest()[:8]
    return f"{spec.deployment_name[:46]}-weights-{digest}"


def _identity(spec: RenderSpec) -> tuple:
    return (spec.engine, spec.image, spec.model_ref, spec.model_revision, spec.nim_profile,
            tuple(map(tuple, parts(spec))), tuple(sorted(spec.env.items())),
            tuple(sorted(spec.secret_env.items())), spec.image_pull_secrets)  # fmt: skip


def _command(spec: RenderSpec, groups: list[list[str]]) -> list[str]:
    if spec.engine == "nim":
        command = ["download-to-cache"]
        if spec.nim_profile:
            command += ["--profiles", spec.nim_profile]
        return command
    # The files come right after the repo: argparse matches the `filenames` positional (nargs *)
    # at the first positional run, so files given after --revision would be "unrecognized".
    base = ["huggingface-cli", "download", spec.model_ref]
    options = ["--revision", spec.model_revision] if spec.model_revision else []
    if len(groups) == 1:
        return [*base, *groups[0], *options]
    # Indexed Job: the part's files by JOB_COMPLETION_INDEX (set by the Job controller).
    cases = " ".join(
        f"{i}) set -- {' '.join(shlex.quote(f) for f in group)} ;;" for i, group in enumerate(groups)
    )
    script = (f'case "$JOB_COMPLETION_INDEX" in {cases} *) exit 1 ;; esac; '
              f'exec {shlex.join(base)} "$@" {shlex.join(options)}').rstrip()  # fmt: skip
    return ["/bin/sh", "-c", script]


def build_job(spec: RenderSpec, engine: Engine) -> dict[str, Any]:
    groups = parts(spec)
    env: list[dict[str, Any]] = []
    if spec.engine == "nim":
        env.append({"name": "NIM_CACHE_PATH", "value": engine.cache_mount_path})
    else:
        env += [{"name": "HF_HOME", "value": HF_HOME},
                {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]  # fmt: skip
    # The user's env reaches the download as it reaches the engine (proxies, HF_ENDPOINT mirrors).
    env += [{"name": k, "value": v} for k, v in sorted(spec.env.items()) if k not in {e["name"] for e in env}]
    secret_env = dict(spec.secret_env)
    if spec.engine == "nim":
        secret_env.setdefault("NGC_API_KEY", ("modeldeck-ngc-api-key", "NGC_API_KEY"))
    wanted = {"HF_TOKEN"} if spec.engine != "nim" else {"NGC_API_KEY"}
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for name, (secret, key) in sorted(secret_env.items())
        if name in wanted
    ]
    mount_path = HF_CACHE_MOUNT_PATH if spec.engine != "nim" else engine.cache_mount_path
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": engine.image(spec),
        "imagePullPolicy": "IfNotPresent",
        "command": _command(spec, groups),
        "env": env,
        # Downloading is network and disk work: no GPU, a little CPU and memory.
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": CACHE_VOLUME, "mountPath": mount_path}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        # A failed download's last log lines (401, repo not found, disk full) become the
        # container's termination message, which the status sync shows on the deployment.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_security_context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    pod_security_context.update(copy.deepcopy(dict(engine.pod_security_context)))
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # each failed attempt is its own pod, counted by backoffLimit
        "containers": [container],
        "volumes": [{"name": CACHE_VOLUME,
                     "persistentVolumeClaim": {"claimName": model_cache_name(spec.deployment_name)}}],  # fmt: skip
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context,
    }
    pull_secrets = (
        spec.image_pull_secrets if spec.image_pull_secrets is not None else engine.default_image_pull_secrets
    )
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    # Where the engine will run (zone, GPU pool): a zonal ReadWriteOnce volume is created where
    # its first pod runs, and the engine's pods must be able to mount it after.
    node_selector = _node_selector(spec)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spec.affinity and spec.affinity.get("nodeAffinity"):
        pod_spec["affinity"] = {"nodeAffinity": copy.deepcopy(dict(spec.affinity["nodeAffinity"]))}

    labels = {**deployment_labels(spec), LABEL_COMPONENT: COMPONENT_DOWNLOAD}
    annotations = {ANNOTATION_PARTS: str(len(groups)), ANNOTATION_FILES: str(sum(map(len, groups)))}
    job_spec: dict[str, Any] = {
        "backoffLimit": BACKOFF_LIMIT,
        # The startup budget is sized from the weights (deployments/spec.py): the download gets it.
        "activeDeadlineSeconds": spec.startup_budget_seconds,
        "template": {
            "metadata": {"labels": merge_metadata(labels, spec.labels), "annotations": dict(annotations)},
            "spec": pod_spec,
        },
    }
    if len(groups) > 1:
        job_spec.update(completionMode="Indexed", completions=len(groups),
                        parallelism=min(len(groups), PARALLEL_PARTS))  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(job_name(spec), spec, labels, annotations),
        "spec": job_spec,
    }
