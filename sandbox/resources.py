"""The resource types the sandbox API server knows, and the discovery documents that list them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

KUBE_VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.4",
    "gitCommit": "a51b3b711150f57ffc1f526a640ec058514ed596",
    "gitTreeState": "clean",
    "buildDate": "2024-08-14T19:04:25Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
READ_VERBS = ("get", "list", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (e.g. `deployments.apps`), as discovery describes it."""

    group: str  # "" is the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # Real servers keep metadata.generation only for kinds whose spec is reconciled.
    has_generation: bool = False
    # CRDs accept no strategic merge patch (there is no Go struct to read merge keys from).
    custom: bool = False
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`deployments.apps` / `pods`: the name real error messages use."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """`Deployment.apps` / `Service`: the name real validation messages use."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def key(self) -> str:
        return f"{self.group}/{self.plural}"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def discovery_entries(self) -> list[dict]:
        entry: dict = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        for sub in self.subresources:
            if sub == "status":
                entries.append(
                    {
                        "name": f"{self.plural}/status",
                        "singularName": "",
                        "namespaced": self.namespaced,
                        "kind": self.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
            elif sub == "scale":
                entries.append(
                    {
                        "name": f"{self.plural}/scale",
                        "singularName": "",
                        "namespaced": self.namespaced,
                        "group": "autoscaling",
                        "version": "v1",
                        "kind": "Scale",
                        "verbs": ["get", "patch", "update"],
                    }
                )
            elif sub == "log":
                entries.append(
                    {
                        "name": f"{self.plural}/log",
                        "singularName": "",
                        "namespaced": self.namespaced,
                        "kind": "Pod",
                        "verbs": ["get"],
                    }
                )
        return entries


_ALL = ("all",)

BUILTIN: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",), ("status",),
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    ResourceType("", "v1", "nodes", "node", "Node", False, ("no",), ("status",)),
    ResourceType("", "v1", "pods", "pod", "Pod", True, ("po",), ("status", "log"), categories=_ALL),
    ResourceType("", "v1", "services", "service", "Service", True, ("svc",), ("status",),
                 verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
                 categories=_ALL),
    ResourceType("", "v1", "secrets", "secret", "Secret"),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "persistentvolumeclaims", "persistentvolumeclaim",
                 "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    ResourceType("", "v1", "events", "event", "Event", True, ("ev",)),
    ResourceType("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, ("sa",)),
    ResourceType("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",),
                 ("status", "scale"), has_generation=True, categories=_ALL),
    ResourceType("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ("rs",),
                 ("status", "scale"), has_generation=True, categories=_ALL),
    ResourceType("batch", "v1", "jobs", "job", "Job", True, (), ("status",), has_generation=True,
                 categories=_ALL),
    ResourceType("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", True, ("ing",),
                 ("status",), has_generation=True),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy",
                 True, ("netpol",), has_generation=True),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "customresourcedefinition", "CustomResourceDefinition", False, ("crd", "crds"),
                 ("status",), has_generation=True, verbs=READ_VERBS),
)  # fmt: skip

# Custom resources a cluster may "have" (the inference operators ModelDeck can render for).
CUSTOM: dict[str, ResourceType] = {
    rt.plural: rt
    for rt in (
        ResourceType("apps.nvidia.com", "v1alpha1", "nimservices", "nimservice", "NIMService",
                     True, (), ("status",), has_generation=True, custom=True),
        ResourceType("apps.nvidia.com", "v1alpha1", "nimcaches", "nimcache", "NIMCache",
                     True, (), ("status",), has_generation=True, custom=True),
        ResourceType("serving.kserve.io", "v1beta1", "inferenceservices", "inferenceservice",
                     "InferenceService", True, ("isvc",), ("status",), has_generation=True,
                     custom=True),
        ResourceType("serving.kserve.io", "v1alpha1", "servingruntimes", "servingruntime",
                     "ServingRuntime", True, (), ("status",), has_generation=True, custom=True),
        ResourceType("gateway.networking.k8s.io", "v1", "gateways", "gateway", "Gateway",
                     True, ("gtw",), ("status",), has_generation=True, custom=True),
        ResourceType("gateway.networking.k8s.io", "v1", "httproutes", "httproute", "HTTPRoute",
                     True, (), ("status",), has_generation=True, custom=True),
        # ModelDeck's own CRD (deploy/crds/modeldeployment.yaml), read by its controller.
        ResourceType("modeldeck.io", "v1", "modeldeployments", "modeldeployment", "ModelDeployment",
                     True, ("mdep",), ("status",), has_generation=True, custom=True),
    )
}  # fmt: skip

# What a cluster with an operator installed serves (`--crds nim-operator,kserve,gateway-api`).
CRD_SETS: dict[str, tuple[str, ...]] = {
    "nim-operator": ("nimservices", "nimcaches"),
    "kserve": ("inferenceservices", "servingruntimes"),
    "gateway-api": ("gateways", "httproutes"),
    "modeldeck": ("modeldeployments",),
}


def expand_crds(names: Iterable[str]) -> list[str]:
    """CRD plurals from plurals or set names (nim-operator, kserve, gateway-api), no repeats."""
    out: list[str] = []
    for name in names:
        for plural in CRD_SETS.get(name, (name,)):
            if plural not in out:
                out.append(plural)
    return out


class Registry:
    """The resource types one emulated cluster serves, found by URL parts or by kind."""

    def __init__(self, crds: Iterable[str] = ()) -> None:
        crds = expand_crds(crds)
        unknown = [name for name in crds if name not in CUSTOM]
        if unknown:
            raise ValueError(f"unknown CRDs {unknown}; known: {sorted(CUSTOM)}")
        self.types: list[ResourceType] = list(BUILTIN) + [CUSTOM[name] for name in crds]
        self._by_path = {(rt.group, rt.version, rt.plural): rt for rt in self.types}
        self._by_kind: dict[str, ResourceType] = {}
        for rt in self.types:
            for alias in (rt.kind, rt.kind.lower(), rt.plural, rt.singular, rt.group_resource):
                self._by_kind.setdefault(alias, rt)

    def __iter__(self):
        return iter(self.types)

    def by_path(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def lookup(self, kind: str) -> ResourceType:
        """By kind (`Deployment`), plural (`deployments`) or `deployments.apps`."""
        try:
            return self._by_kind[kind]
        except KeyError:
            raise KeyError(f"the sandbox cluster has no resource type {kind!r}") from None

    @property
    def custom_types(self) -> list[ResourceType]:
        return [rt for rt in self.types if rt.custom]

    # -- discovery documents -------------------------------------------------------------

    def group_versions(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for rt in self.types:
            if rt.group and rt.version not in found.setdefault(rt.group, []):
                found[rt.group].append(rt.version)
        return found

    def api_versions(self, server_address: str) -> dict:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        }

    def api_group(self, group: str) -> dict | None:
        versions = self.group_versions().get(group)
        if not versions:
            return None
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def api_group_list(self) -> dict:
        groups = [self.api_group(group) for group in self.group_versions()]
        for group in groups:
            assert group is not None
            del group["kind"], group["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def resource_list(self, group: str, version: str) -> dict | None:
        types = [rt for rt in self.types if rt.group == group and rt.version == version]
        if not types:
            return None
        resources = [entry for rt in types for entry in rt.discovery_entries()]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def crd_objects(self) -> list[dict]:
        """CustomResourceDefinition objects for the CRDs this cluster has (read-only)."""
        objects = []
        for rt in self.custom_types:
            objects.append(
                {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": f"{rt.plural}.{rt.group}"},
                    "spec": {
                        "group": rt.group,
                        "names": {
                            "plural": rt.plural,
                            "singular": rt.singular,
                            "kind": rt.kind,
                            "listKind": f"{rt.kind}List",
                            **({"shortNames": list(rt.short_names)} if rt.short_names else {}),
                        },
                        "scope": "Namespaced" if rt.namespaced else "Cluster",
                        "versions": [
                            {
                                "name": rt.version,
                                "served": True,
                                "storage": True,
                                "subresources": {"status": {}},
                                "schema": {
                                    "openAPIV3Schema": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    }
                                },
                            }
                        ],
                    },
                    "status": {
                        "acceptedNames": {"plural": rt.plural, "kind": rt.kind},
                        "storedVersions": [rt.version],
                        "conditions": [
                            {
                                "type": "Established",
                                "status": "True",
                                "reason": "InitialNamesAccepted",
                            },
                            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                        ],
                    },
                }
            )
        return objects
