"""The sandbox cluster's operators: NIM Operator (NIMService, NIMCache) and KServe, as their CRDs behave."""

from __future__ import annotations

import logging
import time

from sandbox.apimachinery import (
    clone,
    labels_match,
    now_rfc3339,
    selector_from_label_selector,
)
from sandbox.cluster_common import (
    _owner_ref,
    _revise,
    _set_condition,
)
from sandbox.resources import ResourceType
from sandbox.validation import apply_defaults

log = logging.getLogger(__name__)


class Operators:
    """Mixed into Kubelet: turns custom resources into Deployments and writes their status."""

    def _sync_operators(self) -> None:
        for plural in ("nimcaches", "nimservices", "inferenceservices"):
            rt = self.crd.get(plural)
            if rt is None:
                continue
            for cr in self.store.objects(rt):
                if cr["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    self._sync_custom(rt, cr)
                except (KeyError, TypeError, ValueError, AttributeError):
                    log.exception("cannot reconcile %s %s", rt.kind, cr["metadata"].get("name"))

    def _sync_nimcache(self, rt: ResourceType, cr: dict) -> None:
        """NIMCache: a PVC `<name>-pvc` (storage.pvc), filled by a download job that the sandbox
        finishes `ready_delay` after the claim is bound; then state Ready (nimcache_types.go)."""
        meta, spec = cr["metadata"], cr.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        pvc_spec = (spec.get("storage") or {}).get("pvc") or {}
        pvc_name = pvc_spec.get("name") or f"{name}-pvc"
        pvc_rt = self.rt["persistentvolumeclaims"]
        pvc = self.store.try_get(pvc_rt, ns, pvc_name)
        if pvc is None and pvc_spec.get("create"):
            body = {"metadata": {"name": pvc_name, "namespace": ns, "ownerReferences": [_owner_ref(cr, rt)],
                                 "labels": {"app.kubernetes.io/managed-by": "k8s-nim-operator"}},
                    "spec": {"accessModes": [pvc_spec.get("volumeAccessMode") or "ReadWriteOnce"],
                             "resources": {"requests": {"storage": pvc_spec.get("size") or "50Gi"}}}}  # fmt: skip
            if pvc_spec.get("storageClass"):
                body["spec"]["storageClassName"] = pvc_spec["storageClass"]
            pvc = self.store.create(pvc_rt, ns, body, internal=True)
        bound = ((pvc or {}).get("status") or {}).get("phase") == "Bound"
        key = ("nimcache", meta["uid"])
        if bound and key not in self._cache_jobs:
            self._cache_jobs[key] = time.monotonic()
        done = bound and time.monotonic() - self._cache_jobs.get(key, time.monotonic()) >= self.ready_delay
        if bound and not done:
            self._timers_extra = True
        now = now_rfc3339()
        conditions = list((cr.get("status") or {}).get("conditions") or [])
        conditions = _set_condition(conditions, "NIM_CACHE_PVC_CREATED", "True" if pvc else "False",
                                    "PVCCreated", "", now, probe_time=False)  # fmt: skip
        conditions = _set_condition(conditions, "NIM_CACHE_JOB_COMPLETED", "True" if done else "False",
                                    "JobCompleted" if done else "JobPending", "", now, probe_time=False)  # fmt: skip
        status = {"state": "Ready" if done else ("InProgress" if bound else "Pending"), "pvc": pvc_name,
                  "conditions": conditions, "observedGeneration": meta.get("generation", 1)}  # fmt: skip
        if status != cr.get("status"):
            fresh = self.store.try_get(rt, ns, name)
            if fresh is not None:
                self.store.update_internal(rt, _revise(fresh, status=status))

    def _sync_custom(self, rt: ResourceType, cr: dict) -> None:
        meta, spec = cr["metadata"], cr.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        if rt.plural == "nimcaches":
            self._sync_nimcache(rt, cr)
            return
        waiting_for = ""
        if rt.plural == "nimservices":
            # As k8s-nim-operator renders it (api/apps/v1alpha1/nimservice_types.go): labels are
            # the standard ones merged with spec.labels (standard win), selector app=<name>,
            # port `api`, NIM_CACHE_PATH=/model-store on the cache volume, NGC_API_KEY from
            # authSecret, sidecarContainers after the NIM container.
            image = spec.get("image") or {}
            port = ((spec.get("expose") or {}).get("service") or {}).get("port", 8000)
            workload = f"{name}"
            labels = {**dict(spec.get("labels") or {}), "app": name, "app.kubernetes.io/name": name,
                      "app.kubernetes.io/instance": name, "app.kubernetes.io/part-of": "nim-service",
                      "app.kubernetes.io/managed-by": "k8s-nim-operator"}  # fmt: skip
            env = [{"name": "NIM_CACHE_PATH", "value": "/model-store"},
                   {"name": "NIM_SERVER_PORT", "value": str(port)}, *list(spec.get("env") or [])]  # fmt: skip
            if spec.get("authSecret"):
                env.append(
                    {
                        "name": "NGC_API_KEY",
                        "valueFrom": {
                            "secretKeyRef": {"name": spec["authSecret"], "key": "NGC_API_KEY"}
                        },
                    }
                )
            container = {
                "name": "nim",
                "image": f"{image.get('repository', '')}:{image.get('tag', 'latest')}",
                "env": env,
                "ports": [{"name": "api", "containerPort": port}],
                "resources": spec.get("resources") or {},
                "volumeMounts": [{"name": "model-store", "mountPath": "/model-store"}],
            }
            replicas = spec.get("replicas", 1)
            sidecars = [
                {"name": sc.get("name"), "image": f"{(sc.get('image') or {}).get('repository', '')}:"
                                                  f"{(sc.get('image') or {}).get('tag', 'latest')}",
                 **{k: clone(sc[k]) for k in ("command", "args", "env") if sc.get(k)}}
                for sc in spec.get("sidecarContainers") or [] if isinstance(sc, dict)
            ]  # fmt: skip
            storage = spec.get("storage") or {}
            volume: dict = {"name": "model-store", "emptyDir": {}}
            cache_name = (storage.get("nimCache") or {}).get("name")
            if cache_name:
                cache = self.store.try_get(self.crd["nimcaches"], ns, cache_name) if "nimcaches" in self.crd else None
                cache_status = (cache or {}).get("status") or {}
                if cache_status.get("state") != "Ready":
                    waiting_for = f'NIMCache "{cache_name}" is not ready'
                volume = {"name": "model-store",
                          "persistentVolumeClaim": {"claimName": cache_status.get("pvc") or f"{cache_name}-pvc"}}  # fmt: skip
            elif (storage.get("pvc") or {}).get("name"):
                volume = {"name": "model-store", "persistentVolumeClaim": {"claimName": storage["pvc"]["name"]}}
            pod_spec: dict = {"containers": [container, *sidecars], "volumes": [volume]}
            svc_port = {"name": "api", "port": port, "targetPort": port}
            predictor: dict = spec
        else:
            predictor = spec.get("predictor") or {}
            workload = f"{name}-predictor"
            # predictor.labels are added to the component's pods (ComponentExtensionSpec).
            labels = {**dict(predictor.get("labels") or {}), "app": f"isvc.{workload}",
                      "component": "predictor", "serving.kserve.io/inferenceservice": name}  # fmt: skip
            model = predictor.get("model") or {}
            runtime_pod: dict = {}
            if model.get("runtime"):
                # A named ServingRuntime supplies the pod: its `kserve-container` gets the
                # model's args/env/resources merged in (servingruntime_types.go).
                runtime = (self.store.try_get(self.crd["servingruntimes"], ns, model["runtime"])
                           if "servingruntimes" in self.crd else None)  # fmt: skip
                if runtime is None:
                    waiting_for = f'specified runtime {model["runtime"]} does not exist'
                runtime_pod = clone((runtime or {}).get("spec") or {})
            if runtime_pod.get("containers"):
                containers = runtime_pod["containers"]
                main = next((c for c in containers if c.get("name") == "kserve-container"), containers[0])
                main["args"] = [*(main.get("args") or []), *(model.get("args") or [])]
                main["env"] = [*(main.get("env") or []), *(model.get("env") or [])]
                if model.get("resources"):
                    main["resources"] = clone(model["resources"])
            elif predictor.get("containers"):
                containers = clone(predictor["containers"])
                containers[0].setdefault("name", "kserve-container")
            else:
                fmt = (model.get("modelFormat") or {}).get("name", "huggingface")
                args = list(model.get("args") or [])
                if model.get("storageUri"):
                    args.append(f"--model_dir={model['storageUri']}")
                containers = [{
                    "name": "kserve-container",
                    "image": model.get("image") or f"kserve/{fmt}server:v0.14.0",
                    "args": args,
                    "env": list(model.get("env") or []),
                    "ports": [{"name": "http1", "containerPort": 8080}],
                    "resources": model.get("resources") or {},
                }]  # fmt: skip
            replicas = predictor.get("minReplicas", 1)
            pod_spec = {"containers": containers}
            for key in ("volumes", "nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
                if runtime_pod.get(key):
                    pod_spec[key] = runtime_pod[key]
            first_port = ((containers[0].get("ports") or [{}])[0]).get("containerPort", 8080)
            svc_port = {"name": "http", "port": 80, "targetPort": first_port}
        for key in ("nodeSelector", "tolerations", "affinity"):
            if predictor.get(key):
                pod_spec[key] = clone(predictor[key])
        if rt.plural == "nimservices" and (spec.get("image") or {}).get("pullSecrets"):
            pod_spec["imagePullSecrets"] = [{"name": s} for s in spec["image"]["pullSecrets"]]
        owner = [_owner_ref(cr, rt)]
        if waiting_for:
            self._write_custom_status(rt, cr, {}, workload, svc_port["port"], waiting_for=waiting_for)
            return
        desired_dep = {
            "metadata": {
                "name": workload,
                "namespace": ns,
                "labels": labels,
                "ownerReferences": owner,
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": labels["app"]}},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }
        dep_rt, svc_rt = self.rt["deployments"], self.rt["services"]
        dep = self.store.try_get(dep_rt, ns, workload)
        if dep is None:
            # Internal creates store the body as is; it must not share parts with the CR.
            dep = self.store.create(dep_rt, ns, clone(desired_dep), internal=True)
        else:
            probe = clone(dep)
            probe["spec"]["replicas"] = replicas
            probe["spec"]["template"] = clone(desired_dep["spec"]["template"])
            apply_defaults(dep_rt, probe)
            if probe["spec"] != dep["spec"]:
                dep = self.store.update_internal(dep_rt, probe) or dep
        if self.store.try_get(svc_rt, ns, workload) is None:
            self.store.create(svc_rt, ns, clone({
                "metadata": {"name": workload, "namespace": ns, "labels": labels, "ownerReferences": owner},
                "spec": {"selector": {"app": labels["app"]}, "ports": [svc_port]},
            }), internal=True)  # fmt: skip
        self._write_custom_status(rt, cr, dep, workload, svc_port["port"])

    def _failure(self, dep: dict) -> str | None:
        selector = selector_from_label_selector((dep.get("spec") or {}).get("selector"))
        for pod in self.store.objects(self.rt["pods"], dep["metadata"]["namespace"]):
            if not labels_match(selector, pod["metadata"].get("labels")):
                continue
            status = pod.get("status") or {}
            for cond in status.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                    return cond.get("message")
            for cs in status.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                             "CrashLoopBackOff", "CreateContainerConfigError"):  # fmt: skip
                    return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        return None

    def _write_custom_status(
        self, rt: ResourceType, cr: dict, dep: dict, workload: str, port: int, *, waiting_for: str = ""
    ) -> None:
        meta = cr["metadata"]
        dep_status = dep.get("status") or {}
        desired = (dep.get("spec") or {}).get("replicas", 1)
        ready = (
            dep_status.get("readyReplicas", 0) >= desired
            and dep_status.get("updatedReplicas", 0) >= desired
        )
        failure = None if ready or waiting_for else self._failure(dep)
        old = cr.get("status") or {}
        now = now_rfc3339()
        conditions = list(old.get("conditions") or [])
        host = f"{workload}.{meta['namespace']}.svc.cluster.local"
        if rt.plural == "nimservices":
            # Condition types NIM_SERVICE_READY / NIM_SERVICE_FAILED (nimservice_types.go).
            ready = ready and not waiting_for
            state = "Ready" if ready else ("Failed" if failure else "NotReady")
            if ready:
                conditions = _set_condition(conditions, "NIM_SERVICE_READY", "True", "Ready",
                                            f'deployment "{workload}" successfully rolled out', now,
                                            probe_time=False)  # fmt: skip
                conditions = _set_condition(
                    conditions, "NIM_SERVICE_FAILED", "False", "Ready", "", now, probe_time=False
                )
            else:
                conditions = _set_condition(conditions, "NIM_SERVICE_READY", "False", "NotReady",
                                            failure or waiting_for
                                            or f'Waiting for deployment "{workload}" rollout to finish',
                                            now, probe_time=False)  # fmt: skip
                conditions = _set_condition(conditions, "NIM_SERVICE_FAILED", "True" if failure else "False",
                                            "Failed" if failure else "Ready", failure or "", now,
                                            probe_time=False)  # fmt: skip
            status: dict = {
                "state": state,
                "conditions": conditions,
                "availableReplicas": dep_status.get("availableReplicas", 0),
                "model": {
                    "name": (cr.get("spec") or {}).get("model", {}).get("name", meta["name"])
                    if isinstance((cr.get("spec") or {}).get("model"), dict)
                    else meta["name"],
                    "clusterEndpoint": f"{host}:{port}",
                    "externalEndpoint": "",
                },
            }
        else:
            reason = "" if ready else ("RevisionFailed" if failure else "RevisionMissing")
            message = failure or waiting_for or ("" if ready else "Predictor is not ready")
            for kind in ("IngressReady", "PredictorReady", "Ready"):
                conditions = _set_condition(conditions, kind, "True" if ready else "False",
                                            reason, message, now, probe_time=False)  # fmt: skip
            status = {
                "conditions": conditions,
                "url": f"http://{host}",
                "address": {"url": f"http://{host}"},
                "components": {"predictor": {"url": f"http://{host}"}},
                "modelStatus": {
                    "states": {
                        "activeModelState": "Loaded"
                        if ready
                        else ("FailedToLoad" if failure else "Pending"),
                        "targetModelState": "Loaded" if not failure else "FailedToLoad",
                    },
                    "transitionStatus": "UpToDate"
                    if ready
                    else ("BlockedByFailedLoad" if failure else "InProgress"),
                    **(
                        {"lastFailureInfo": {"reason": "ModelLoadFailed", "message": failure}}
                        if failure
                        else {}
                    ),
                },
            }
        status["observedGeneration"] = meta.get("generation", 1)
        if status == old:
            return
        fresh = self.store.try_get(rt, meta["namespace"], meta["name"])
        if fresh is None:
            return
        self.store.update_internal(rt, _revise(fresh, status=status))
