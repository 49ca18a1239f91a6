"""Sharing deployments with organizations, access policies and the audit log (governance)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models

from projects.models import Organization


class AuditAction(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    DEACTIVATE = "deactivate", "Deactivate"
    ACTIVATE = "activate", "Activate"
    RETRY = "retry", "Retry"
    DELETE = "delete", "Delete"
    ROLLBACK = "rollback", "Rollback"
    SHARE = "share", "Share"
    ACCESS_CHANGE = "access_change", "Access change"
    KEY_CREATE = "key_create", "API key create"
    KEY_REVOKE = "key_revoke", "API key revoke"
    QUOTA_CHANGE = "quota_change", "Quota change"
    BUDGET_CHANGE = "budget_change", "Budget change"
    INTEGRATION_CHANGE = "integration_change", "Integration change"
    PROMOTE = "promote", "Promote"
    RESOURCE_APPLY = "resource_apply", "Applied from a ModelDeployment resource"
    RESOURCE_DELETED = "resource_deleted", "ModelDeployment resource deleted"


class AuditEntry(models.Model):
    """One change someone made, with the object's state before and after. Never edited."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="audit_entries"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept so the log still says who acted after the user is deleted.
    actor_repr = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=30, choices=AuditAction.choices)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    diff = models.JSONField(default=dict, blank=True, help_text='{"resources.gpus": [old, new]}')
    names = models.JSONField(
        default=dict, blank=True,
        help_text='{"pool": ["gpu-a", "gpu-b"]}: names of the objects the diff refers to by id, when it was written',
    )  # fmt: skip
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["organization", "object_type", "object_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.actor_repr or 'system'} {self.action} {self.object_type} {self.object_repr}"

    def save(self, *args, **kwargs) -> None:
        # The log is append-only: a second save would rewrite history.
        if self.pk is not None and not kwargs.pop("_allow_update", False):
            raise ValueError("Audit entries cannot be changed.")
        super().save(*args, **kwargs)


class ShareMode(models.TextChoices):
    NONE = "none", "Not shared (this organization only)"
    ALL = "all", "All organizations"
    SPECIFIC = "specific", "Specific organizations"


class DeploymentShare(models.Model):
    """Which other organizations may call a deployment (its own organization always may)."""

    deployment = models.OneToOneField(
        "deployments.ModelDeployment", on_delete=models.CASCADE, related_name="share"
    )
    mode = models.CharField(max_length=10, choices=ShareMode.choices, default=ShareMode.NONE)
    organizations = models.ManyToManyField(
        Organization, blank=True, related_name="deployments_shared_with"
    )
    # Copy of organizations' ids written by the service in the same transaction, so the
    # gateway's snapshot is one query (see sharing.access.policy_snapshot).
    organization_ids = models.JSONField(default=list, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.deployment}: {self.get_mode_display()}"


class AccessKind(models.TextChoices):
    PUBLIC = "public", "Public (no API key needed)"
    AUTHENTICATED = "authenticated", "Any API key of an organization it is shared with"
    GROUPS = "groups", "Members of some groups"
    USERS = "users", "Some users"


class AccessPolicy(models.Model):
    """Who, among the callers a deployment is shared with, may call it."""

    deployment = models.OneToOneField(
        "deployments.ModelDeployment", on_delete=models.CASCADE, related_name="access_policy"
    )
    kind = models.CharField(
        max_length=20, choices=AccessKind.choices, default=AccessKind.AUTHENTICATED
    )
    groups = models.ManyToManyField(Group, blank=True, related_name="+")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    # Copies of the M2M ids for the one-query gateway snapshot; written by the service.
    group_ids = models.JSONField(default=list, blank=True)
    user_ids = models.JSONField(default=list, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "access policies"

    def __str__(self) -> str:
        return f"{self.deployment}: {self.get_kind_display()}"
