"""Compute pools, endpoints, model deployments, their revisions and events."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from catalog.models import CatalogModel, ProfileBundle
from console.crypto import EncryptedTextField
from projects.models import Environment, GpuReservation, Organization, Project


class PoolKind(models.TextChoices):
    KUBECONFIG = "kubeconfig", "Kubeconfig"
    IN_CLUSTER = "in_cluster", "In-cluster service account"
    SANDBOX = "sandbox", "Sandbox (simulated, offline demo)"


class PoolManager(models.TextChoices):
    OPERATOR = "operator", "Platform operator"
    ORGANIZATION = "organization", "Organization admins"


class PoolExposure(models.TextChoices):
    """How the gateway reaches the engines on a pool (DESIGN.md: Compute Pool exposure)."""

    IN_CLUSTER = "in_cluster", "In-cluster Service DNS (ModelDeck runs in this cluster)"
    INGRESS = "ingress", "Ingress"
    GATEWAY_API = "gateway_api", "Gateway API (HTTPRoute)"


# How the gateway reaches a pool's engines (the pool's exposure settings).
POOL_EXPOSURE_FIELDS = ("exposure", "exposure_host", "exposure_address", "ingress_class", "tls_secret",
                        "gateway_name", "gateway_namespace", "ingress_namespace")  # fmt: skip


class ComputePool(models.Model):
    """A Kubernetes cluster deployments can land on, granted to one organization.

    Platform operators register pools for organizations; where the setting allows it,
    organization admins bring their own cluster (`managed_by=organization`), whose API server
    must then be at a public address unless an operator allows private ones.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="pools")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=PoolKind.choices)
    kubeconfig = EncryptedTextField(blank=True)
    api_url = models.CharField(max_length=300, blank=True, help_text="Sandbox only: the emulator's URL.")
    engine_label = models.CharField(max_length=50, help_text="Inference engine this pool runs, e.g. vllm.")
    region = models.CharField(max_length=50, blank=True)
    description = models.TextField(blank=True)
    managed_by = models.CharField(
        max_length=20, choices=PoolManager.choices, default=PoolManager.OPERATOR,
        help_text="Who set the pool's connection: a platform operator or the organization's admins.",
    )  # fmt: skip
    private_addresses_allowed = models.BooleanField(
        default=False,
        help_text="Set by a platform operator: an organization-managed pool's API server may be at a "
        "loopback, link-local or private address.",
    )
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_check = models.JSONField(default=dict, blank=True, help_text="Server version, nodes, GPUs.")
    reachable = models.BooleanField(null=True)
    exposure = models.CharField(max_length=20, choices=PoolExposure.choices, default=PoolExposure.IN_CLUSTER)
    exposure_host = models.CharField(
        max_length=200, blank=True,
        help_text="Ingress / Gateway API: base host; a deployment answers at <deployment>-<namespace>.<base host>.",
    )  # fmt: skip
    exposure_address = models.CharField(
        max_length=300, blank=True,
        help_text="Optional http(s)://host:port the gateway connects to instead of resolving the host "
        "(the load balancer's address when there is no DNS for it).",
    )  # fmt: skip
    ingress_class = models.CharField(max_length=253, blank=True, help_text="Ingress: the IngressClass name.")
    tls_secret = models.CharField(
        max_length=253, blank=True, help_text="Ingress: TLS Secret for the hosts (empty: plain HTTP)."
    )
    gateway_name = models.CharField(max_length=253, blank=True, help_text="Gateway API: the Gateway's name.")
    gateway_namespace = models.CharField(max_length=63, blank=True, help_text="Gateway API: the Gateway's namespace.")
    ingress_namespace = models.CharField(
        max_length=63, blank=True,
        help_text="Namespace of the ingress controller or gateway proxies: the engines' NetworkPolicy admits it.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="pool_name_unique_in_org")]
        permissions = [
            ("operate_computepool", "Can register, edit and test compute pools of every organization"),
        ]

    def operators(self) -> dict[str, bool]:
        """Inference operators the last "Test connection" found (NIM Operator, KServe, Gateway API)."""
        found = (self.last_check or {}).get("operators") or {}
        return {name: bool(found.get(name)) for name in ("nim", "kserve", "gateway_api")}

    def serves_modeldeployments(self) -> bool:
        """The last "Test connection" found the ModelDeployment CRD (modeldeck.io/v1): the status
        sync lists those resources here (deployments/controller.py)."""
        return bool(((self.last_check or {}).get("operators") or {}).get("modeldeck"))

    def __str__(self) -> str:
        return self.name

    @property
    def is_sandbox(self) -> bool:
        """The built-in simulated cluster: labelled as simulated wherever it appears."""
        return self.kind == PoolKind.SANDBOX

    def needs_public_address(self) -> bool:
        """A cluster an organization brought may not point the server at its own network."""
        return (
            self.kind == PoolKind.KUBECONFIG
            and self.managed_by == PoolManager.ORGANIZATION
            and not self.private_addresses_allowed
        )


class Endpoint(models.Model):
    """Where deployments are exposed on the gateway; one model can have many."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="endpoints")
    name = models.CharField(max_length=100)
    path = models.CharField(max_length=200, help_text="Path on the gateway, e.g. /llama-chat")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="endpoint_name_unique_in_project")]

    def __str__(self) -> str:
        return self.name


class DeploymentState(models.TextChoices):
    PENDING = "pending", "Pending"
    DEPLOYING = "deploying", "Deploying"
    RUNNING = "running", "Running"
    FAILED = "failed", "Failed"
    DEACTIVATED = "deactivated", "Deactivated"
    DELETING = "deleting", "Deleting"
    UNKNOWN = "unknown", "Unknown"


# States in which a deployment holds its GPUs and is meant to run (everything but deactivated
# and deleting): deactivate starts from these, the status sync watches them.
ACTIVE_STATES: tuple[str, ...] = (
    DeploymentState.PENDING,
    DeploymentState.DEPLOYING,
    DeploymentState.RUNNING,
    DeploymentState.FAILED,
    DeploymentState.UNKNOWN,
)


# States a deployment passes through on its way to another (a push, a rollout or a scale,
# waiting for capacity, a delete): what is on screen is about to change.
TRANSITIONAL_STATES: tuple[str, ...] = (
    DeploymentState.PENDING,
    DeploymentState.DEPLOYING,
    DeploymentState.DELETING,
)


def in_transition(state: str, kind: str, health: str) -> bool:
    """Whether a deployment in `state` (of `kind`, its endpoint's `health`) is about to change by
    itself: a transitional state, or an external endpoint whose first check is still to come."""
    return state in TRANSITIONAL_STATES or (
        kind == DeploymentKind.EXTERNAL
        and state == DeploymentState.RUNNING
        and health == EndpointHealth.UNKNOWN
    )


def gpu_holder_key(deployment_pk: int) -> str:
    """The holder name a deployment's GPU reservation is stored under (projects.GpuReservation)."""
    return f"deployment:{deployment_pk}"


class DeploymentKind(models.TextChoices):
    MANAGED = "managed", "Managed (runs on a compute pool)"
    EXTERNAL = "external", "External (an OpenAI-compatible URL of your own)"


# An external deployment's state says it is in service, not that its URL answers: its health
# (the last check's verdict, below) and the gateway's circuit breaker (gateway/overflow.py) say that.
EXTERNAL_RUNNING_REASON = (
    "External endpoint: the gateway sends its requests to the URL; its health, checked every 15 s, "
    "shows beside this state."
)


class EndpointHealth(models.TextChoices):
    """An external endpoint's last health check (gateway.tasks.check_external_endpoints)."""

    UNKNOWN = "unknown", "Not checked yet"
    HEALTHY = "healthy", "Reachable"
    UNHEALTHY = "unhealthy", "Unreachable"


class ModelDeployment(models.Model):
    """Binds model + endpoint + bundle + pool + project; its spec lives in revisions.

    An ``external`` deployment runs nothing: the gateway sends its requests to ``external_url``
    (with ``external_credential``), and to ``overflow`` (a managed deployment of the same
    organization) when that one fails, is slow, throttles or is busy (deployments/external.py)."""

    # PROTECT: a project goes only once it has no deployment (projects.services.project_delete);
    # a deployment never disappears as a side effect, with its revisions, events and usage links.
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="deployments")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="deployments")
    endpoint = models.ForeignKey(Endpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments")
    bundle = models.ForeignKey(
        ProfileBundle, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments",
        help_text="Empty only for an external deployment.",
    )
    pool = models.ForeignKey(
        ComputePool, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments",
        help_text="Empty only for an external deployment.",
    )
    kind = models.CharField(max_length=10, choices=DeploymentKind.choices, default=DeploymentKind.MANAGED)
    external_url = models.CharField(max_length=500, blank=True, help_text="External: the OpenAI-compatible base URL (…/v1).")
    # The external endpoint's own key; only the gateway sends it (never shown back, last 4 aside).
    external_credential = EncryptedTextField(blank=True)
    overflow = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="overflow_for",
        help_text="External: the managed deployment that takes requests the external one can't.",
    )
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )
    name = models.CharField(max_length=50)
    description = models.TextField(blank=True)
    state = models.CharField(max_length=20, choices=DeploymentState.choices, default=DeploymentState.PENDING)
    state_reason = models.TextField(blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    current_revision = models.ForeignKey(
        "Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The revision the deployment should run.",
    )
    serving_revision = models.ForeignKey(
        "Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The revision the Service points at (blue-green).",
    )
    push_waiting_since = models.DateTimeField(
        null=True, blank=True,
        help_text="A committed change whose push is not queued yet (the task queue was unreachable); "
                  "the periodic push_waiting task queues it.",
    )  # fmt: skip
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The engine refuses calls without it; only the gateway (and the engine's Secret) know it.
    engine_credential = EncryptedTextField(blank=True)
    # External only: the health check's last verdict on the URL (deployments.external.external_health_record).
    health = models.CharField(max_length=10, choices=EndpointHealth.choices, default=EndpointHealth.UNKNOWN)
    health_detail = models.CharField(max_length=300, blank=True, help_text="What the last check saw, in words.")
    health_checked_at = models.DateTimeField(null=True, blank=True)
    managed_by_resource = models.CharField(
        max_length=317, blank=True,
        help_text="namespace/name of the ModelDeployment resource on this deployment's pool that "
                  "manages it (deployments/controller.py); empty: managed in ModelDeck.",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="deployment_name_unique_in_project"),
            models.CheckConstraint(
                condition=models.Q(kind="external") | models.Q(pool__isnull=False, bundle__isnull=False),
                name="deployment_managed_has_pool",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("deployments:detail", args=[self.pk])

    @property
    def is_external(self) -> bool:
        return self.kind == DeploymentKind.EXTERNAL

    def in_transition(self) -> bool:
        return in_transition(self.state, self.kind, self.health)

    def spec(self) -> dict:
        return self.current_revision.spec if self.current_revision else {}

    def served_name(self) -> str:
        """The model name clients send: the spec's served_model_name (always set on a canonical
        spec), else the deployment's own name."""
        return self.spec().get("served_model_name") or self.name

    def gpu_holder(self) -> str:
        return gpu_holder_key(self.pk)

    def replicas_wanted(self, spec: dict | None = None) -> int:
        """Replicas the pool should run for `spec` (default: the current one): the autoscaler's
        count within [min, max] when the spec autoscales, else the minimum (at least one)."""
        spec = self.spec() if spec is None else spec
        replicas = spec.get("replicas") or {"min": 1, "max": 1}
        start = max(int(replicas["min"]), 1)
        if not (spec.get("autoscaling") or {}).get("enabled"):
            return start
        try:
            desired = self.scale.desired
        except DeploymentScale.DoesNotExist:
            desired = None
        if desired is None:
            return start
        return min(max(int(desired), int(replicas["min"])), int(replicas["max"]))

    def scale_status(self) -> dict:
        """The REST `scale` field and the page's headline: replicas asked for, ready, and why."""
        try:
            scale = self.scale
        except DeploymentScale.DoesNotExist:
            scale = None
        spec = self.spec()
        if self.state in (DeploymentState.DEACTIVATED, DeploymentState.DELETING) or not spec:
            return {"desired": 0, "ready": scale.ready if scale else 0,
                    "reason": "Deactivated: no replicas." if self.state == DeploymentState.DEACTIVATED
                    else "Being deleted."}  # fmt: skip
        desired = self.replicas_wanted(spec)
        if scale is not None and scale.observed_at is not None:
            ready = scale.ready
        else:
            ready = desired if self.state == DeploymentState.RUNNING else 0
        auto = spec.get("autoscaling") or {}
        if scale is not None and scale.reason:
            reason = scale.reason
        elif auto.get("enabled"):
            reason = f"Autoscaling on {auto.get('metric')}, target {auto.get('target')}; no change yet."
        else:
            reason = f"Fixed at {desired} replica{'s' if desired != 1 else ''} (autoscaling off)."
        return {"desired": desired, "ready": ready, "reason": reason}

    def managed_message(self) -> str:
        """Why a user can't change this deployment here, or "" when they can."""
        if not self.managed_by_resource:
            return ""
        return (
            f"Managed by ModelDeployment {self.managed_by_resource} on pool {self.pool.name}; "
            "change it there."
        )

    def gpus_held(self) -> int:
        """GPUs this deployment holds in its project's quota right now (0 when deactivated)."""
        row = GpuReservation.objects.filter(holder=self.gpu_holder()).only("gpus").first()
        return row.gpus if row else 0


class ServedName(models.Model):
    """The served model name a deployment holds in its organization.

    Clients pick a deployment by this name, so two deployments of one organization may never
    share it; a check-then-act in the service let 10 concurrent creates all succeed, so the
    database decides (the loser of a race gets a field error, see services._claim_served_name).
    The spec stays the source of the name; this row is its claim, written in the same
    transaction as the revision that sets it."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    deployment = models.OneToOneField(ModelDeployment, on_delete=models.CASCADE, related_name="served_name_claim")
    name = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="served_name_unique_in_org")
        ]

    def __str__(self) -> str:
        return self.name


class Revision(models.Model):
    """An immutable snapshot of a deployment's spec."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    reason = models.CharField(max_length=200, blank=True)
    pods_revision = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="The revision whose pods run this one, when the change didn't touch the pods "
                  "(pricing, limits, autoscaling, scale in place); empty: its own pods.",
    )  # fmt: skip
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "number"], name="revision_number_unique")
        ]

    def __str__(self) -> str:
        return f"{self.deployment} r{self.number}"

    def pods_number(self) -> int:
        """The revision number the Kubernetes objects of this revision carry (name, labels)."""
        return self.pods_revision or self.number


class DeploymentEvent(models.Model):
    deployment = models.ForeignKey(ModelDeployment, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=10, default="Normal")  # Normal | Warning, as in Kubernetes
    reason = models.CharField(max_length=100)
    message = models.TextField(blank=True)
    source = models.CharField(max_length=20, default="console")  # console | kubernetes
    count = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        indexes = [models.Index(fields=["deployment", "-last_seen_at"])]

    def __str__(self) -> str:
        return f"{self.deployment}: {self.reason}"


class DeploymentScale(models.Model):
    """What the autoscaler decided for a deployment and what the pool shows (one row each).

    Written by deployments/autoscale.py (each tick, only when something changed) and read by
    the push (ModelDeployment.replicas_wanted), the REST `scale` field and the console."""

    deployment = models.OneToOneField(ModelDeployment, on_delete=models.CASCADE, primary_key=True,
                                      related_name="scale")  # fmt: skip
    desired = models.PositiveIntegerField(null=True, blank=True, help_text="Replicas asked of the pool; empty: the start count.")
    wanted = models.PositiveIntegerField(default=0, help_text="What the load asks for before the quota (desired ≤ wanted).")
    ready = models.PositiveIntegerField(default=0, help_text="Ready replicas the pool showed last.")
    pods = models.PositiveIntegerField(default=0, help_text="Pods that exist (ready or not): GPUs still in use.")
    reason = models.CharField(max_length=300, blank=True)
    load = models.FloatField(default=0.0, help_text="The spec's metric, last measured.")
    low_since = models.DateTimeField(null=True, blank=True, help_text="Since when the load asks for fewer replicas.")
    idle_since = models.DateTimeField(null=True, blank=True, help_text="Since when no request came.")
    changed_at = models.DateTimeField(null=True, blank=True)
    observed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.deployment_id}: {self.desired} desired, {self.ready} ready"


class ScaleSample(models.Model):
    """One point of the deployment page's chart: desired vs. ready replicas and the load."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.CASCADE, related_name="scale_samples")
    at = models.DateTimeField()
    desired = models.PositiveIntegerField()
    ready = models.PositiveIntegerField()
    load = models.FloatField()

    class Meta:
        ordering = ["deployment", "at"]
        indexes = [models.Index(fields=["deployment", "at"])]


# --- Galleries: reusable resource templates and data sources (deployments/galleries.py) --------


class GalleryScope(models.Model):
    """Organization-wide (project empty) or one project's; names unique in their scope."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
        help_text="Empty: shared by every project of the organization.",
    )  # fmt: skip
    name = models.CharField(max_length=63)
    description = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def scope_label(self) -> str:
        return self.project.name if self.project_id else "Organization"


class ResourceTemplate(GalleryScope):
    """A compute preset (CPU, memory, GPU type and count, shared memory). Chosen at deploy time
    it is copied into the spec: changing it never changes a running deployment."""

    cpu = models.CharField(max_length=20)
    memory = models.CharField(max_length=20)
    gpus = models.PositiveSmallIntegerField(default=0)
    gpu_type = models.CharField(max_length=100, blank=True)
    shm_size = models.CharField(max_length=20, blank=True, help_text="Shared memory (/dev/shm), e.g. 16Gi.")

    class Meta(GalleryScope.Meta):
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], condition=models.Q(project__isnull=True),
                                    name="resource_template_name_unique_in_org"),
            models.UniqueConstraint(fields=["project", "name"], condition=models.Q(project__isnull=False),
                                    name="resource_template_name_unique_in_project"),
        ]  # fmt: skip


class DataSourceKind(models.TextChoices):
    PVC = "pvc", "PersistentVolumeClaim"
    S3 = "s3", "S3 bucket"
    HF_CACHE = "hf_cache", "Hugging Face cache (PVC)"
    NGC_CACHE = "ngc_cache", "NGC / NIM cache (PVC)"


class DataSource(GalleryScope):
    """A reusable storage definition: a claim (PVC, HF or NGC cache) or an S3 bucket with its
    credentials (the S3 integration's fields, stored encrypted)."""

    kind = models.CharField(max_length=20, choices=DataSourceKind.choices)
    claim_name = models.CharField(max_length=253, blank=True, help_text="PVC kinds: the claim's name.")
    uri = models.CharField(max_length=500, blank=True, help_text="S3: s3://bucket/prefix.")
    mount_path = models.CharField(max_length=300, blank=True)
    credentials = EncryptedTextField(blank=True)  # S3: JSON of projects.models.S3_FIELDS

    class Meta(GalleryScope.Meta):
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], condition=models.Q(project__isnull=True),
                                    name="data_source_name_unique_in_org"),
            models.UniqueConstraint(fields=["project", "name"], condition=models.Q(project__isnull=False),
                                    name="data_source_name_unique_in_project"),
        ]  # fmt: skip
