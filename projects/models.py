"""Organizations (tenants), their members, projects, GPU quotas, integrations and API keys."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from console.crypto import EncryptedTextField

# A project's slug becomes part of a Kubernetes namespace: DNS-1123 label rules.
slug_validator = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "Use lowercase letters, digits and dashes; start and end with a letter or digit.",
)
# Kubernetes namespace names are RFC 1123 labels: at most 63 characters of [a-z0-9-], starting
# and ending alphanumeric (kubernetes.io/docs/concepts/overview/working-with-objects/names/).
namespace_validator = RegexValidator(
    r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "A namespace is a DNS-1123 label: at most 63 lowercase letters, digits and dashes.",
)
GPU_QUOTA_MAX = 100_000
# A GPU quota's bounds, in words (not Django's "Ensure this value is less than or equal to …"):
# the model's full_clean in projects.services applies them, and the forms and serializers
# that parse a quota reuse these, so console and REST refuse alike.
GPU_QUOTA_ERRORS = {
    "min_value": "A GPU quota can't be negative; 0 allows no GPUs.",
    "max_value": f"At most {GPU_QUOTA_MAX:,} GPUs.",
}
GPU_QUOTA_VALIDATORS = [
    MinValueValidator(0, GPU_QUOTA_ERRORS["min_value"]),
    MaxValueValidator(GPU_QUOTA_MAX, GPU_QUOTA_ERRORS["max_value"]),
]
# Monthly budgets (projects.services.budget_set): amounts in the organization's budget currency,
# to the cent's hundredth; enforced by the gateway (gateway.ratelimit), empty means no limit.
BUDGET_MAX_DIGITS = 14
BUDGET_DECIMAL_PLACES = 4


def budget_field(help_text: str) -> models.DecimalField:
    return models.DecimalField(
        max_digits=BUDGET_MAX_DIGITS, decimal_places=BUDGET_DECIMAL_PLACES, null=True, blank=True,
        help_text=help_text,
    )  # fmt: skip


class Organization(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.CharField(max_length=30, unique=True, validators=[slug_validator])
    gpu_quota = models.PositiveIntegerField(
        default=8,
        validators=GPU_QUOTA_VALIDATORS,
        help_text="GPUs all projects of this organization may hold together.",
    )
    monthly_budget = budget_field("Spend per calendar month (UTC) of all the organization's keys; empty: no limit.")
    budget_currency = models.CharField(
        max_length=3, default="USD", help_text="Currency of every budget in this organization (the deployments' pricing currency)."
    )
    # Quotas beyond GPUs (empty: no limit), held in the same ledger (GpuReservation).
    cpu_quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="CPU cores all projects may hold together; empty: no limit."
    )
    memory_quota_gib = models.PositiveIntegerField(
        null=True, blank=True, help_text="Memory (GiB) all projects may hold together; empty: no limit."
    )
    deployment_quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Active deployments of all projects together; empty: no limit."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def gpu_used(self) -> int:
        return GpuReservation.objects.filter(project__organization=self).aggregate(
            total=Sum("gpus")
        )["total"] or 0


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    monthly_budget = budget_field("This member's spend per month in the organization; empty: no limit.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")]
        ordering = ["organization__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class Project(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=100)
    slug = models.CharField(
        max_length=30,
        validators=[slug_validator],
        help_text="Part of the Kubernetes namespace on every compute pool; cannot change later.",
    )
    # Chosen once by projects.services.project_create (unique across all organizations, a
    # DNS-1123 label) and never changed: every object on every pool lives in it.
    kube_namespace = models.CharField(
        max_length=63,
        unique=True,
        validators=[namespace_validator],
        editable=False,
        help_text="The Kubernetes namespace of this project on every compute pool.",
    )
    description = models.TextField(blank=True)
    gpu_quota = models.PositiveIntegerField(
        default=4,
        validators=GPU_QUOTA_VALIDATORS,
        help_text="GPUs this project's deployments may hold together.",
    )
    cpu_quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="CPU cores this project's deployments may hold; empty: no limit."
    )
    memory_quota_gib = models.PositiveIntegerField(
        null=True, blank=True, help_text="Memory (GiB) this project's deployments may hold; empty: no limit."
    )
    deployment_quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Active deployments this project may have; empty: no limit."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="ProjectMember", related_name="projects", blank=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="project_slug_unique_in_org"),
            models.UniqueConstraint(fields=["organization", "name"], name="project_name_unique_in_org"),
            # A project created without the service would otherwise share the empty namespace.
            models.CheckConstraint(condition=~models.Q(kube_namespace=""), name="project_namespace_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("projects:detail", args=[self.pk])

    def namespace(self) -> str:
        return self.kube_namespace

    def gpu_used(self) -> int:
        # List pages annotate `gpu_held` (projects.selectors.with_gpu_use): one query, not one a row.
        held = getattr(self, "gpu_held", None)
        if held is not None:
            return held
        return self.gpu_reservations.aggregate(total=Sum("gpus"))["total"] or 0

    def gpu_used_percent(self) -> int:
        if not self.gpu_quota:
            return 100 if self.gpu_used() else 0
        return min(100, round(100 * self.gpu_used() / self.gpu_quota))


class ProjectMember(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_member_row_per_project")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project}"


class GpuReservation(models.Model):
    """GPUs held in a project's quota by one holder (e.g. ``deployment:42``).

    A ledger rather than a counter: used GPUs are derived by summing, so a crashed
    update can never leave a stale total behind.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gpu_reservations")
    holder = models.CharField(max_length=100, unique=True)
    gpus = models.PositiveIntegerField()
    # What the holder keeps beside GPUs (quotas beyond GPUs); 0 for rows written before them.
    cpu_millicores = models.PositiveBigIntegerField(default=0)
    memory_bytes = models.PositiveBigIntegerField(default=0)
    deployments = models.PositiveSmallIntegerField(default=0, help_text="1 for an active deployment.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "GPU reservation"  # Django's default reads "gpu reservation"

    def __str__(self) -> str:
        return f"{self.holder}: {self.gpus} GPU(s) in {self.project}"


class IntegrationKind(models.TextChoices):
    HUGGINGFACE = "huggingface", "Hugging Face token"
    NGC = "ngc", "NGC API key"
    S3 = "s3", "S3 credentials"


# An S3 integration's secret is this JSON object (projects.services.integration_set checks it):
# the keys are what the AWS SDKs and the Run:ai model streamer read from the environment.
S3_FIELDS = ("access_key_id", "secret_access_key", "endpoint_url", "region")


class Integration(models.Model):
    """A project's credential for an outside service, encrypted at rest, never shown again."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="integrations")
    kind = models.CharField(max_length=20, choices=IntegrationKind.choices)
    secret = EncryptedTextField()
    secret_last4 = models.CharField(max_length=4, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    check_ok = models.BooleanField(null=True, blank=True)
    check_message = models.CharField(max_length=500, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "kind"], name="one_integration_per_kind")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.project}"

    def s3_settings(self) -> dict[str, str]:
        """An S3 integration's fields (access_key_id, secret_access_key, endpoint_url, region);
        only those that are set."""
        try:
            data = json.loads(self.secret or "{}")
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: str(data[k]) for k in S3_FIELDS if data.get(k)}


class Environment(models.Model):
    """dev / staging / prod … of a project, with policies deployments in it must keep."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=50)
    slug = models.CharField(max_length=30, validators=[slug_validator])
    description = models.TextField(blank=True)
    allowed_pools = models.ManyToManyField(
        "deployments.ComputePool", blank=True, related_name="environments",
        help_text="Empty: any pool (subject to the pool-label policy).",
    )
    allowed_pool_labels = models.JSONField(
        default=dict, blank=True, help_text='Pool attributes allowed, e.g. {"region": ["us-east-1"]}.'
    )
    allowed_gpu_types = models.JSONField(default=list, blank=True, help_text="Empty: any GPU type.")
    max_replicas = models.PositiveIntegerField(null=True, blank=True)
    max_gpus_per_replica = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "slug"], name="environment_slug_unique_in_project")]

    def __str__(self) -> str:
        return f"{self.project} / {self.name}"


class APIKeyScope(models.TextChoices):
    GATEWAY = "gateway", "Gateway: call models"
    REST = "rest", "REST API: manage ModelDeck as you"


class APIKey(models.Model):
    """A user's key for the gateway or the REST API. Only a keyed hash is stored; the secret is shown once.

    Valid only while its owner is an active user and a member of its organization (checked by
    the gateway and the REST authentication on every request, from caches invalidated on commit).
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(
        max_length=10, choices=APIKeyScope.choices, default=APIKeyScope.GATEWAY,
        help_text="Gateway keys call models; REST API keys act as their owner on /api/v1/.",
    )  # fmt: skip
    deployments = models.ManyToManyField(
        "deployments.ModelDeployment", blank=True, related_name="api_keys",
        help_text="Empty: every deployment the key's owner may call.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_reason = models.CharField(max_length=200, blank=True)
    monthly_budget = budget_field("This key's spend per month; empty: no limit of its own.")
    playground = models.BooleanField(
        default=False, editable=False,
        help_text="Minted by the console's playground (projects.keys.playground_key_issue); key lists hide these.",
    )  # fmt: skip

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class OrganizationGroup(models.Model):
    """A named group of an organization's members; access policies name them ("groups" kind).

    Membership rides on Django's ``auth.Group`` (``user.groups``), which the gateway already reads
    for a key's owner; this row makes the group belong to one organization, so no tenant sees,
    names or fills another's groups.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="groups")
    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="organization_group")
    name = models.CharField(max_length=80)
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="group_name_unique_in_org")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("org:group_detail", args=[self.pk])


class Invitation(models.Model):
    """An invitation to join an organization, sent by email as a one-time link.

    Only a keyed hash of the link's token is stored; the link works once, until ``expires_at``,
    and not after it is revoked.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.organization}"

    def state(self, now=None) -> str:
        """pending | accepted | revoked | expired — derived, never stored."""
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= (now or timezone.now()):
            return "expired"
        return "pending"
