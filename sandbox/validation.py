"""Defaulting and validation of the sandbox API server: the subset a real server applies that
ModelDeck's manifests can trip over (names, labels, Deployments, pod specs, Services, ...)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from sandbox.apimachinery import (
    ApiError,
    FieldError,
    bad_request,
    invalid,
    label_key_problem,
    label_value_problem,
    labels_match,
    parse_quantity,
    quantity_string,
    selector_from_label_selector,
)
from sandbox.resources import ResourceType

DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
DNS1035_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])*$")
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

# Kinds whose names are DNS labels rather than subdomains.
_LABEL_NAMED = {"namespaces"}
_DNS1035_NAMED = {"services"}


# -- defaulting ----------------------------------------------------------------------------


def apply_defaults(rt: ResourceType, obj: dict) -> None:
    """Fill the defaults a real server fills, in place (deterministic, so re-applies are no-ops)."""
    spec = obj.get("spec")
    if rt.plural == "deployments" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", "25%")
                    rolling.setdefault("maxSurge", "25%")
        _default_template(spec.get("template"))
    elif rt.plural == "replicasets" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        _default_template(spec.get("template"))
    elif rt.plural == "jobs" and isinstance(spec, dict):
        # batch/v1 JobSpec defaults (pkg/apis/batch/v1/defaults.go).
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        _default_template(spec.get("template"))
    elif rt.plural == "pods" and isinstance(spec, dict):
        default_pod_spec(spec, is_pod=True)
    elif rt.plural == "services" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])
    elif rt.plural == "secrets":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict):
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
    elif rt.plural == "persistentvolumeclaims" and isinstance(spec, dict):
        spec.setdefault("volumeMode", "Filesystem")
        _quantities(spec.get("resources"))
    elif rt.plural == "namespaces":
        name = obj.get("metadata", {}).get("name")
        if name:
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    elif rt.plural == "nodes":
        for section in ("capacity", "allocatable"):
            _quantity_map((obj.get("status") or {}).get(section))


def _default_template(template: Any) -> None:
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"], is_pod=False)


def default_pod_spec(spec: dict, *, is_pod: bool) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _default_container(container, is_pod=is_pod)
    for volume in spec.get("volumes") or []:
        if not isinstance(volume, dict):
            continue
        if isinstance(volume.get("secret"), dict):
            volume["secret"].setdefault("defaultMode", 420)
        if isinstance(volume.get("configMap"), dict):
            volume["configMap"].setdefault("defaultMode", 420)


def _default_container(container: dict, *, is_pod: bool) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = container.get("image")
    if isinstance(image, str) and image:
        last = image.rsplit("/", 1)[-1]
        untagged = ":" not in last and "@" not in image
        latest = image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if untagged or latest else "IfNotPresent")
    resources = container.setdefault("resources", {})
    if isinstance(resources, dict):
        _quantities(resources)
        # SetDefaults_Pod: a limit without a request requests the limit (pods, not templates).
        if is_pod and isinstance(resources.get("limits"), dict):
            requests = resources.setdefault("requests", {})
            for name, value in resources["limits"].items():
                requests.setdefault(name, value)
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_key)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("scheme", "HTTP")
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")


def _quantities(resources: Any) -> None:
    if isinstance(resources, dict):
        for section in ("requests", "limits"):
            _quantity_map(resources.get(section))


def _quantity_map(values: Any) -> None:
    if isinstance(values, dict):
        for name, value in values.items():
            values[name] = quantity_string(value)


# -- validation ----------------------------------------------------------------------------


def check_types(rt: ResourceType, obj: dict) -> None:
    """The decode errors (400) a Go server gives for wrongly typed fields ModelDeck sets."""

    def fail(go_field: str, want: str, got: Any) -> None:
        got_type = {bool: "bool", str: "string", dict: "object", list: "array"}.get(
            type(got), "number"
        )
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: json: cannot '
            f"unmarshal {got_type} into Go struct field {go_field} of type {want}"
        )

    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        fail(f"{rt.kind}.metadata", "v1.ObjectMeta", metadata)
    for section in ("labels", "annotations"):
        values = (metadata or {}).get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            fail(f"ObjectMeta.metadata.{section}", "map[string]string", values)
        for value in values.values():
            if not isinstance(value, str):
                fail(f"ObjectMeta.metadata.{section}", "string", value)
    spec = obj.get("spec")
    if spec is not None and not isinstance(spec, dict):
        fail(f"{rt.kind}.spec", f"v1.{rt.kind}Spec", spec)
    spec = spec or {}
    if rt.plural in ("deployments", "replicasets"):
        replicas = spec.get("replicas")
        if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool)):
            fail(f"{rt.kind}Spec.spec.replicas", "int32", replicas)
    for container in _all_containers(rt, obj):
        for port in container.get("ports") or []:
            value = port.get("containerPort") if isinstance(port, dict) else None
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                fail("ContainerPort.spec.containers.ports.containerPort", "int32", value)
    pod_spec = spec if rt.plural == "pods" else (spec.get("template") or {}).get("spec")
    if isinstance(pod_spec, dict):
        _check_scheduling_types(pod_spec, fail)
    if rt.plural == "services":
        for port in spec.get("ports") or []:
            value = port.get("port") if isinstance(port, dict) else None
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                fail("ServicePort.spec.ports.port", "int32", value)


# The Go types of a pod's scheduling fields, as far as the decoder checks them: a JSON value of
# the wrong type is a 400 before validation (`nodeAffinity: 5` must be refused here, not reach
# the scheduler loop).
_OBJ, _LIST, _STR, _MAP = "object", "array", "string", "map[string]string"
_SCHEDULING_TYPES: dict[str, Any] = {
    "nodeSelector": (_MAP, "map[string]string"),
    "tolerations": (_LIST, "[]v1.Toleration", (_OBJ, "v1.Toleration", {
        "key": (_STR, "string"), "operator": (_STR, "v1.TolerationOperator"),
        "value": (_STR, "string"), "effect": (_STR, "v1.TaintEffect"),
        "tolerationSeconds": ("int", "int64")})),
    "affinity": (_OBJ, "v1.Affinity", {
        "nodeAffinity": (_OBJ, "v1.NodeAffinity", {
            "requiredDuringSchedulingIgnoredDuringExecution": (_OBJ, "v1.NodeSelector", {
                "nodeSelectorTerms": (_LIST, "[]v1.NodeSelectorTerm", (_OBJ, "v1.NodeSelectorTerm", {
                    "matchExpressions": (_LIST, "[]v1.NodeSelectorRequirement", (_OBJ, "v1.NodeSelectorRequirement", {})),
                    "matchFields": (_LIST, "[]v1.NodeSelectorRequirement", (_OBJ, "v1.NodeSelectorRequirement", {}))}))}),
            "preferredDuringSchedulingIgnoredDuringExecution": (_LIST, "[]v1.PreferredSchedulingTerm", (_OBJ, "v1.PreferredSchedulingTerm", {
                "weight": ("int", "int32"), "preference": (_OBJ, "v1.NodeSelectorTerm", {})}))}),
        "podAffinity": (_OBJ, "v1.PodAffinity", {
            "requiredDuringSchedulingIgnoredDuringExecution": (_LIST, "[]v1.PodAffinityTerm", (_OBJ, "v1.PodAffinityTerm", {})),
            "preferredDuringSchedulingIgnoredDuringExecution": (_LIST, "[]v1.WeightedPodAffinityTerm", (_OBJ, "v1.WeightedPodAffinityTerm", {}))}),
        "podAntiAffinity": (_OBJ, "v1.PodAntiAffinity", {
            "requiredDuringSchedulingIgnoredDuringExecution": (_LIST, "[]v1.PodAffinityTerm", (_OBJ, "v1.PodAffinityTerm", {})),
            "preferredDuringSchedulingIgnoredDuringExecution": (_LIST, "[]v1.WeightedPodAffinityTerm", (_OBJ, "v1.WeightedPodAffinityTerm", {}))}),
    }),
}  # fmt: skip


def _check_scheduling_types(pod_spec: dict, fail: Any) -> None:
    def check(value: Any, shape: tuple, go_field: str) -> None:
        if value is None:
            return
        json_type, go_type = shape[0], shape[1]
        ok = {
            _OBJ: isinstance(value, dict),
            _MAP: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
            _LIST: isinstance(value, list),
            _STR: isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
        }[json_type]
        if not ok:
            fail(go_field, go_type, value)
        if json_type == _OBJ and len(shape) > 2:
            for key, sub in shape[2].items():
                check(value.get(key), sub, f"{go_field}.{key}")
        if json_type == _LIST and len(shape) > 2:
            for item in value:
                check(item, shape[2], go_field)

    for key, shape in _SCHEDULING_TYPES.items():
        check(pod_spec.get(key), shape, f"PodSpec.spec.template.spec.{key}")


def _all_containers(rt: ResourceType, obj: dict) -> list[dict]:
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        return []
    pod_spec = spec if rt.plural == "pods" else (spec.get("template") or {}).get("spec") or {}
    if not isinstance(pod_spec, dict):
        return []
    found = []
    for key in ("containers", "initContainers"):
        found += [c for c in pod_spec.get(key) or [] if isinstance(c, dict)]
    return found


def validate(rt: ResourceType, obj: dict, old: dict | None) -> None:
    """Raise ApiError 422 Invalid with every problem found, like the real validation does."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    errors = validate_metadata(rt, meta)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if rt.plural == "deployments":
        errors += _validate_workload(spec, "spec", deployment=True)
    elif rt.plural == "replicasets":
        errors += _validate_workload(spec, "spec", deployment=False)
    elif rt.plural == "pods":
        errors += validate_pod_spec(spec, "spec", template=False)
    elif rt.plural == "jobs":
        errors += _validate_job(spec)
    elif rt.plural == "services":
        errors += _validate_service(spec)
    elif rt.plural in ("secrets", "configmaps"):
        errors += _validate_data(rt, obj, old)
    elif rt.plural == "persistentvolumeclaims":
        errors += _validate_pvc(spec, (old or {}).get("spec"))
    elif rt.plural == "inferenceservices" and not isinstance(spec.get("predictor"), dict):
        errors.append(FieldError("Required", "spec.predictor"))
    elif rt.plural == "ingresses":
        errors += _validate_ingress(spec)
    elif rt.plural == "networkpolicies":
        if not isinstance(spec.get("podSelector"), dict):
            errors.append(FieldError("Required", "spec.podSelector"))
        for i, kind in enumerate(spec.get("policyTypes") or []):
            if kind not in ("Ingress", "Egress"):
                errors.append(FieldError("NotSupported", f"spec.policyTypes[{i}]", kind,
                                         supported=["Egress", "Ingress"]))  # fmt: skip
    elif rt.plural == "httproutes":
        for i, ref in enumerate(spec.get("parentRefs") or []):
            if not (ref or {}).get("name"):
                errors.append(FieldError("Required", f"spec.parentRefs[{i}].name"))
    elif rt.plural == "nimservices":
        image = spec.get("image") if isinstance(spec.get("image"), dict) else {}
        for key in ("repository", "tag"):
            if not image.get(key):
                errors.append(FieldError("Required", f"spec.image.{key}"))
    if old is not None:
        errors += _validate_immutable(rt, obj, old)
    if errors:
        raise invalid(rt, name, errors)


def _validate_ingress(spec: dict) -> list[FieldError]:
    """networking/v1 Ingress: the parts real validation (pkg/apis/networking/validation) refuses."""
    errors: list[FieldError] = []
    for r, rule in enumerate(spec.get("rules") or []):
        for p, path in enumerate(((rule or {}).get("http") or {}).get("paths") or []):
            where = f"spec.rules[{r}].http.paths[{p}]"
            if path.get("pathType") not in ("Exact", "Prefix", "ImplementationSpecific"):
                errors.append(FieldError("Required", f"{where}.pathType",
                                         detail="pathType must be specified"))  # fmt: skip
            service = (path.get("backend") or {}).get("service") or {}
            if not service.get("name"):
                errors.append(FieldError("Required", f"{where}.backend.service.name"))
            port = service.get("port") or {}
            if not (port.get("number") or port.get("name")):
                errors.append(FieldError("Required", f"{where}.backend.service.port"))
    return errors


def validate_metadata(rt: ResourceType, meta: dict) -> list[FieldError]:
    errors: list[FieldError] = []
    name = meta.get("name") or ""
    if not name:
        errors.append(
            FieldError("Required", "metadata.name", detail="name or generateName is required")
        )
    elif rt.plural in _DNS1035_NAMED:
        if len(name) > 63 or not DNS1035_LABEL_RE.match(name):
            errors.append(FieldError("Invalid", "metadata.name", name, DNS1035_MSG))
    elif rt.plural in _LABEL_NAMED:
        if len(name) > 63 or not DNS1123_LABEL_RE.match(name):
            errors.append(FieldError("Invalid", "metadata.name", name, LABEL_MSG))
    elif rt.plural != "events" and (len(name) > 253 or not DNS1123_SUBDOMAIN_RE.match(name)):
        errors.append(FieldError("Invalid", "metadata.name", name, SUBDOMAIN_MSG))
    errors += validate_labels(meta.get("labels"), "metadata.labels")
    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        problem = label_key_problem(key)
        if problem:
            errors.append(FieldError("Invalid", "metadata.annotations", key, problem))
        total += len(key) + len(value)
    if total > 256 * 1024:
        errors.append(
            FieldError("TooLong", "metadata.annotations", detail="must have at most 262144 bytes")
        )
    return errors


def validate_labels(labels: Any, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for key, value in (labels or {}).items():
        problem = label_key_problem(key)
        if problem:
            errors.append(FieldError("Invalid", path, key, problem))
        problem = label_value_problem(value)
        if problem:
            errors.append(FieldError("Invalid", f"{path}", value, problem))
    return errors


def _percent_or_int(value: Any, replicas: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        pct = int(value[:-1]) * replicas
        return -(-pct // 100) if round_up else pct // 100
    return int(value)


def _validate_workload(spec: dict, path: str, *, deployment: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    replicas = spec.get("replicas", 1)
    if isinstance(replicas, int) and replicas < 0:
        errors.append(
            FieldError(
                "Invalid", f"{path}.replicas", replicas, "must be greater than or equal to 0"
            )
        )
    selector = spec.get("selector")
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict):
        errors.append(FieldError("Required", f"{path}.selector"))
    elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
        errors.append(
            FieldError(
                "Invalid",
                f"{path}.selector",
                selector,
                f"empty selector is invalid for {'deployment' if deployment else 'replicaset'}",
            )
        )
    else:
        errors += validate_labels(selector.get("matchLabels"), f"{path}.selector.matchLabels")
        if not labels_match(selector_from_label_selector(selector), labels):
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.template.metadata.labels",
                    labels,
                    "`selector` does not match template `labels`",
                )
            )
    errors += validate_labels(labels, f"{path}.template.metadata.labels")
    if not template:
        errors.append(FieldError("Required", f"{path}.template"))
        return errors
    pod_spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
    errors += validate_pod_spec(pod_spec, f"{path}.template.spec", template=True)
    if deployment:
        errors += _validate_strategy(spec, path)
    return errors


def _validate_strategy(spec: dict, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type", "RollingUpdate")
    if kind not in ("RollingUpdate", "Recreate"):
        errors.append(
            FieldError(
                "NotSupported",
                f"{path}.strategy.type",
                kind,
                supported=["Recreate", "RollingUpdate"],
            )
        )
    elif kind == "Recreate" and strategy.get("rollingUpdate") is not None:
        errors.append(
            FieldError(
                "Forbidden",
                f"{path}.strategy.rollingUpdate",
                detail="may not be specified when strategy `type` is 'Recreate'",
            )
        )
    elif kind == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") or {}
        values = {}
        for key in ("maxUnavailable", "maxSurge"):
            value = rolling.get(key, "25%")
            try:
                values[key] = _percent_or_int(value, 100, round_up=False)
            except (TypeError, ValueError):
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{path}.strategy.rollingUpdate.{key}",
                        value,
                        "a valid percent string must be a numeric string followed by an ending '%' "
                        "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    )
                )
                continue
            if isinstance(value, str) and values[key] > 100 and key == "maxUnavailable":
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{path}.strategy.rollingUpdate.{key}",
                        value,
                        "must not be greater than 100%",
                    )
                )
        if values.get("maxUnavailable") == 0 and values.get("maxSurge") == 0:
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.strategy.rollingUpdate.maxUnavailable",
                    rolling.get("maxUnavailable"),
                    "may not be 0 when `maxSurge` is 0",
                )
            )
    return errors


def validate_pod_spec(spec: dict, path: str, *, template: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    volumes = spec.get("volumes") or []
    volume_names: set[str] = set()
    for i, volume in enumerate(volumes):
        vname = (volume or {}).get("name", "")
        vpath = f"{path}.volumes[{i}].name"
        if not vname:
            errors.append(FieldError("Required", vpath))
        elif len(vname) > 63 or not DNS1123_LABEL_RE.match(vname):
            errors.append(FieldError("Invalid", vpath, vname, LABEL_MSG))
        elif vname in volume_names:
            errors.append(FieldError("Duplicate", vpath, vname))
        volume_names.add(vname)
    containers = spec.get("containers")
    if not containers:
        errors.append(FieldError("Required", f"{path}.containers"))
    names: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(key) or []):
            errors += _validate_container(
                container or {}, f"{path}.{key}[{i}]", names, volume_names
            )
    policy = spec.get("restartPolicy", "Always")
    allowed = ["Always"] if template else ["Always", "OnFailure", "Never"]
    if policy not in allowed:
        errors.append(
            FieldError("NotSupported", f"{path}.restartPolicy", policy, supported=allowed)
        )
    errors += validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector")
    for i, toleration in enumerate(spec.get("tolerations") or []):
        tpath = f"{path}.tolerations[{i}]"
        operator = toleration.get("operator", "Equal")
        if operator not in ("Equal", "Exists"):
            errors.append(
                FieldError(
                    "NotSupported", f"{tpath}.operator", operator, supported=["Equal", "Exists"]
                )
            )
        if operator == "Exists" and toleration.get("value"):
            errors.append(
                FieldError(
                    "Invalid",
                    f"{tpath}.operator",
                    toleration["value"],
                    "value must be empty when `operator` is 'Exists'",
                )
            )
        effect = toleration.get("effect", "")
        if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            errors.append(
                FieldError(
                    "NotSupported",
                    f"{tpath}.effect",
                    effect,
                    supported=["NoExecute", "NoSchedule", "PreferNoSchedule"],
                )
            )
    return errors


def _validate_container(
    container: dict, path: str, names: set[str], volume_names: set[str]
) -> list[FieldError]:
    errors: list[FieldError] = []
    name = container.get("name", "")
    if not name:
        errors.append(FieldError("Required", f"{path}.name"))
    elif len(name) > 63 or not DNS1123_LABEL_RE.match(name):
        errors.append(FieldError("Invalid", f"{path}.name", name, LABEL_MSG))
    elif name in names:
        errors.append(FieldError("Duplicate", f"{path}.name", name))
    names.add(name)
    if not container.get("image"):
        errors.append(FieldError("Required", f"{path}.image"))
    port_names: set[str] = set()
    for i, port in enumerate(container.get("ports") or []):
        ppath = f"{path}.ports[{i}]"
        number = port.get("containerPort")
        if number is None:
            errors.append(FieldError("Required", f"{ppath}.containerPort"))
        elif not 1 <= number <= 65535:
            errors.append(
                FieldError(
                    "Invalid",
                    f"{ppath}.containerPort",
                    number,
                    "must be between 1 and 65535, inclusive",
                )
            )
        pname = port.get("name")
        if pname:
            if (
                len(pname) > 15
                or not IANA_SVC_NAME_RE.match(pname)
                or not re.search("[a-z]", pname)
            ):
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{ppath}.name",
                        pname,
                        "must be no more than 15 characters, contain only lowercase alphanumeric "
                        "characters or '-' and at least one letter",
                    )
                )
            elif pname in port_names:
                errors.append(FieldError("Duplicate", f"{ppath}.name", pname))
            port_names.add(pname)
        protocol = port.get("protocol", "TCP")
        if protocol not in ("TCP", "UDP", "SCTP"):
            errors.append(
                FieldError(
                    "NotSupported", f"{ppath}.protocol", protocol, supported=["SCTP", "TCP", "UDP"]
                )
            )
    for i, env in enumerate(container.get("env") or []):
        ename = (env or {}).get("name", "")
        if not ename:
            errors.append(FieldError("Required", f"{path}.env[{i}].name"))
        elif not ENV_NAME_RE.match(ename):
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.env[{i}].name",
                    ename,
                    "a valid environment variable name must consist of alphabetic characters, "
                    "digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  "
                    "or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is "
                    "'[-._a-zA-Z][-._a-zA-Z0-9]*')",
                )
            )
    for i, mount in enumerate(container.get("volumeMounts") or []):
        mpath = f"{path}.volumeMounts[{i}]"
        if mount.get("name") not in volume_names:
            errors.append(FieldError("NotFound", f"{mpath}.name", mount.get("name", "")))
        if not mount.get("mountPath"):
            errors.append(FieldError("Required", f"{mpath}.mountPath"))
    errors += _validate_resources(container.get("resources") or {}, f"{path}.resources")
    return errors


def _validate_resources(resources: dict, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    parsed: dict[str, dict[str, Any]] = {"requests": {}, "limits": {}}
    for section in ("requests", "limits"):
        for name, value in (resources.get(section) or {}).items():
            try:
                parsed[section][name] = parse_quantity(value)
            except ValueError as exc:
                errors.append(FieldError("Invalid", f"{path}.{section}[{name}]", value, str(exc)))
                continue
            if parsed[section][name] < 0:
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{path}.{section}[{name}]",
                        value,
                        "must be greater than or equal to 0",
                    )
                )
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        extended = "/" in name and not name.startswith("kubernetes.io/")
        if extended:
            if request != request.to_integral_value():
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{path}.requests[{name}]",
                        resources["requests"][name],
                        "must be an integer",
                    )
                )
            if limit is None:
                errors.append(
                    FieldError(
                        "Required",
                        f"{path}.limits",
                        detail="Limit must be set for non overcommitable resources",
                    )
                )
            elif limit != request:
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{path}.requests",
                        resources["requests"][name],
                        f"must be equal to {name} limit of {resources['limits'][name]}",
                    )
                )
        elif limit is not None and request > limit:
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.requests",
                    resources["requests"][name],
                    f"must be less than or equal to {name} limit of {resources['limits'][name]}",
                )
            )
    return errors


def _validate_service(spec: dict) -> list[FieldError]:
    errors: list[FieldError] = []
    kind = spec.get("type", "ClusterIP")
    supported = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
    if kind not in supported:
        errors.append(FieldError("NotSupported", "spec.type", kind, supported=supported))
    ports = spec.get("ports") or []
    if not ports and kind != "ExternalName" and spec.get("clusterIP") != "None":
        errors.append(FieldError("Required", "spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        ppath = f"spec.ports[{i}]"
        pname = port.get("name", "")
        if len(ports) > 1 and not pname:
            errors.append(FieldError("Required", f"{ppath}.name"))
        elif pname:
            if len(pname) > 63 or not DNS1123_LABEL_RE.match(pname):
                errors.append(FieldError("Invalid", f"{ppath}.name", pname, LABEL_MSG))
            elif pname in names:
                errors.append(FieldError("Duplicate", f"{ppath}.name", pname))
            names.add(pname)
        number = port.get("port")
        if number is None:
            errors.append(FieldError("Required", f"{ppath}.port"))
        elif not 1 <= number <= 65535:
            errors.append(
                FieldError(
                    "Invalid", f"{ppath}.port", number, "must be between 1 and 65535, inclusive"
                )
            )
        target = port.get("targetPort")
        if isinstance(target, int) and not isinstance(target, bool) and not 1 <= target <= 65535:
            errors.append(
                FieldError(
                    "Invalid",
                    f"{ppath}.targetPort",
                    target,
                    "must be between 1 and 65535, inclusive",
                )
            )
        elif isinstance(target, str) and not (
            len(target) <= 15 and IANA_SVC_NAME_RE.match(target) and re.search("[a-z]", target)
        ):
            errors.append(
                FieldError(
                    "Invalid",
                    f"{ppath}.targetPort",
                    target,
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                )
            )
        protocol = port.get("protocol", "TCP")
        if protocol not in ("TCP", "UDP", "SCTP"):
            errors.append(
                FieldError(
                    "NotSupported", f"{ppath}.protocol", protocol, supported=["SCTP", "TCP", "UDP"]
                )
            )
    errors += validate_labels(spec.get("selector"), "spec.selector")
    return errors


def _validate_data(rt: ResourceType, obj: dict, old: dict | None) -> list[FieldError]:
    errors: list[FieldError] = []
    total = 0
    for section in ("data", "binaryData"):
        for key, value in (obj.get(section) or {}).items():
            if not CONFIG_KEY_RE.match(key):
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{section}[{key}]",
                        key,
                        "a valid config key must consist of alphanumeric characters, '-', '_' or "
                        "'.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                        "validation is '[-._a-zA-Z0-9]+')",
                    )
                )
            if rt.plural == "secrets" or section == "binaryData":
                try:
                    base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    raise bad_request(
                        f'{rt.kind} in version "v1" cannot be handled as a {rt.kind}: illegal '
                        f"base64 data at input byte 0"
                    ) from None
            total += len(key) + len(str(value))
    if total > 1024 * 1024:
        errors.append(FieldError("TooLong", "data", detail="must have at most 1048576 bytes"))
    if old is not None and old.get("immutable"):
        for section in ("data", "binaryData"):
            if obj.get(section) != old.get(section):
                errors.append(
                    FieldError(
                        "Forbidden", section, detail="field is immutable when `immutable` is set"
                    )
                )
    if rt.plural == "secrets" and old is not None and obj.get("type") != old.get("type"):
        errors.append(FieldError("Invalid", "type", obj.get("type"), "field is immutable"))
    return errors


def _validate_pvc(spec: dict, old_spec: dict | None) -> list[FieldError]:
    errors: list[FieldError] = []
    modes = spec.get("accessModes") or []
    supported = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]
    if not modes:
        errors.append(
            FieldError("Required", "spec.accessModes", detail="at least 1 access mode is required")
        )
    for mode in modes:
        if mode not in supported:
            errors.append(FieldError("NotSupported", "spec.accessModes", mode, supported=supported))
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if storage is None:
        errors.append(FieldError("Required", "spec.resources[storage]"))
    else:
        try:
            parse_quantity(storage)
        except ValueError as exc:
            errors.append(FieldError("Invalid", "spec.resources[storage]", storage, str(exc)))
    if old_spec is not None:
        strip = ("resources", "volumeName", "volumeAttributesClassName")
        if {k: v for k, v in spec.items() if k not in strip} != {
            k: v for k, v in old_spec.items() if k not in strip
        }:
            errors.append(
                FieldError(
                    "Forbidden",
                    "spec",
                    detail="spec is immutable after creation except resources.requests and "
                    "volumeAttributesClassName for bound claims",
                )
            )
    return errors


def _validate_job(spec: dict) -> list[FieldError]:
    """pkg/apis/batch/validation: a Job's pods never restart in place (Never or OnFailure)."""
    errors: list[FieldError] = []
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    pod_spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
    # A workload template, but the restart policy is the Job's own rule (below).
    errors += validate_pod_spec(pod_spec, "spec.template.spec", template=False)
    policy = pod_spec.get("restartPolicy")
    if policy not in ("Never", "OnFailure"):
        errors.append(FieldError("NotSupported", "spec.template.spec.restartPolicy", policy,
                                 supported=["OnFailure", "Never"]))  # fmt: skip
    if spec.get("completionMode") not in (None, "NonIndexed", "Indexed"):
        errors.append(FieldError("NotSupported", "spec.completionMode", spec.get("completionMode"),
                                 supported=["Indexed", "NonIndexed"]))  # fmt: skip
    if spec.get("completionMode") == "Indexed" and not spec.get("completions"):
        errors.append(FieldError("Required", "spec.completions",
                                 detail="when completion mode is Indexed"))  # fmt: skip
    return errors


def _validate_immutable(rt: ResourceType, obj: dict, old: dict) -> list[FieldError]:
    errors: list[FieldError] = []
    spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
    if rt.plural == "jobs":
        for key in ("template", "completionMode", "completions"):
            if spec.get(key) != old_spec.get(key):
                errors.append(FieldError("Invalid", f"spec.{key}", spec.get(key), "field is immutable"))
    if rt.plural in ("deployments", "replicasets") and spec.get("selector") != old_spec.get(
        "selector"
    ):
        errors.append(
            FieldError("Invalid", "spec.selector", spec.get("selector"), "field is immutable")
        )
    if rt.plural == "services":
        old_ip = old_spec.get("clusterIP")
        if old_ip and spec.get("clusterIP") not in (None, old_ip):
            errors.append(
                FieldError(
                    "Invalid",
                    "spec.clusterIPs[0]",
                    spec.get("clusterIP"),
                    "may not change once set",
                )
            )
    if rt.plural == "pods":

        def mutable_stripped(pod_spec: dict) -> dict:
            stripped = {k: v for k, v in pod_spec.items() if k not in ("activeDeadlineSeconds",)}
            stripped["containers"] = [
                {k: v for k, v in c.items() if k != "image"}
                for c in pod_spec.get("containers") or []
            ]
            return stripped

        if mutable_stripped(spec) != mutable_stripped(old_spec):
            errors.append(
                FieldError(
                    "Forbidden",
                    "spec",
                    detail="pod updates may not change fields other than `spec.containers[*].image`,"
                    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                    "`spec.tolerations` (only additions to existing tolerations),"
                    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                    "previously negative)",
                )
            )
    return errors


def raise_if(errors: list[FieldError], rt: ResourceType, name: str) -> None:
    if errors:
        raise invalid(rt, name, errors)


__all__ = ["ApiError", "apply_defaults", "check_types", "default_pod_spec", "validate"]
