"""Forms of the governance pages; the services do the writing."""

from __future__ import annotations

from collections.abc import Iterable

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.validators import MinValueValidator
from django.db.models import Q

from console.forms import IdsChoiceField, StyledForm
from deployments.models import ComputePool
from projects.models import GPU_QUOTA_VALIDATORS, Environment, Organization, Project, slug_validator
from sharing.models import AccessKind, AuditAction, ShareMode


class ShareForm(StyledForm):
    mode = forms.ChoiceField(
        choices=ShareMode.choices, widget=forms.RadioSelect, label="Share with"
    )
    organizations = IdsChoiceField(
        queryset=Organization.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Only for “Specific organizations”. Their members can see and call this deployment.",
    )

    def __init__(self, *args, owner: Organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["organizations"].queryset = Organization.objects.exclude(pk=owner.pk).order_by(
            "name"
        )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("mode") == ShareMode.SPECIFIC and not data.get("organizations"):
            self.add_error("organizations", "Choose at least one other organization to share with.")
        return data


class AccessForm(StyledForm):
    kind = forms.ChoiceField(
        choices=AccessKind.choices, widget=forms.RadioSelect, label="Who may call it"
    )
    groups = IdsChoiceField(
        queryset=Group.objects.all().order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    users = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Users of this organization or of organizations it is shared with.",
    )

    def __init__(
        self, *args, organization_ids: list[int], user_ids: Iterable[int] = (), **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        # Members of the given organizations, plus whoever the policy already names.
        self.fields["users"].queryset = (
            get_user_model()
            .objects.filter(
                Q(memberships__organization_id__in=organization_ids) | Q(pk__in=list(user_ids))
            )
            .distinct()
            .order_by("username")
        )
        # The owner's groups (the first id) and platform-wide ones, never another tenant's.
        owner_id = organization_ids[0] if organization_ids else None
        self.fields["groups"].queryset = Group.objects.filter(
            Q(organization_group__isnull=True) | Q(organization_group__organization_id=owner_id)
        ).select_related("organization_group").order_by("name")
        self.fields["groups"].label_from_instance = lambda g: (
            g.organization_group.name if hasattr(g, "organization_group") else g.name
        )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") == AccessKind.GROUPS and not data.get("groups"):
            self.add_error("groups", "Choose at least one group, or pick another access kind.")
        if data.get("kind") == AccessKind.USERS and not data.get("users"):
            self.add_error("users", "Choose at least one user, or pick another access kind.")
        return data


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class EnvironmentForm(StyledForm):
    name = forms.CharField(max_length=50)
    slug = forms.CharField(
        max_length=30,
        validators=[slug_validator],
        help_text="e.g. dev, staging, production; fixed later.",
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    allowed_pools = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: any pool of the organization.",
    )
    allowed_pool_labels = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "region=us-east-1, us-west-2"}),
        label="Allowed pool labels",
        help_text="One label per line: label=value, value. Pools must match every line. Empty: any.",
    )
    allowed_gpu_types = forms.CharField(
        required=False,
        label="Allowed GPU types",
        widget=forms.TextInput(attrs={"placeholder": "A100, H100"}),
        help_text="Comma-separated. Empty: any GPU type.",
    )
    max_replicas = forms.IntegerField(
        required=False,
        validators=[MinValueValidator(1)],
        label="Maximum replicas",
        error_messages={"invalid": "Enter a whole number, e.g. 2."},
        help_text="Empty: no limit.",
    )
    max_gpus_per_replica = forms.IntegerField(
        required=False,
        validators=[MinValueValidator(1)],
        label="Maximum GPUs per replica",
        error_messages={"invalid": "Enter a whole number, e.g. 1."},
        help_text="Empty: no limit.",
    )

    def __init__(
        self, *args, project: Project, instance: Environment | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)

        self.project = project
        self.instance = instance
        self.fields["allowed_pools"].queryset = ComputePool.objects.filter(
            organization=project.organization
        ).order_by("name")
        if instance is not None:
            self.fields["slug"].disabled = True
            self.fields["slug"].required = False
            self.fields["slug"].help_text = "Fixed."

    @classmethod
    def initial_for(cls, environment: Environment) -> dict:
        return {
            "name": environment.name,
            "slug": environment.slug,
            "description": environment.description,
            "allowed_pools": list(environment.allowed_pools.all()),
            "allowed_pool_labels": "\n".join(
                f"{k}={', '.join(v)}" for k, v in (environment.allowed_pool_labels or {}).items()
            ),
            "allowed_gpu_types": ", ".join(environment.allowed_gpu_types or []),
            "max_replicas": environment.max_replicas,
            "max_gpus_per_replica": environment.max_gpus_per_replica,
        }

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        others = Environment.objects.filter(project=self.project, name__iexact=name)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise forms.ValidationError(
                f"Project “{self.project.name}” already has an environment named “{name}”."
            )
        return name

    def clean_slug(self) -> str:
        if self.instance is not None:
            return self.instance.slug
        slug = self.cleaned_data["slug"]
        if Environment.objects.filter(project=self.project, slug=slug).exists():
            raise forms.ValidationError(
                f"Project “{self.project.name}” already has an environment “{slug}”."
            )
        return slug

    def clean_allowed_pool_labels(self) -> dict:
        labels: dict[str, list[str]] = {}
        for number, line in enumerate(
            self.cleaned_data["allowed_pool_labels"].splitlines(), start=1
        ):
            if not line.strip():
                continue
            key, sep, values = line.partition("=")
            if not sep or not key.strip() or not _split(values):
                raise forms.ValidationError(
                    f"Line {number}: write label=value, value (e.g. region=us-east-1)."
                )
            labels[key.strip()] = _split(values)
        return labels

    def clean_allowed_gpu_types(self) -> list[str]:
        return _split(self.cleaned_data["allowed_gpu_types"])


class QuotaForm(StyledForm):
    gpu_quota = forms.IntegerField(
        label="GPU quota",
        validators=GPU_QUOTA_VALIDATORS,
        error_messages={"invalid": "Enter the GPU quota as a whole number, e.g. 4."},
    )


class AuditFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search")
    action = forms.ChoiceField(choices=[("", "Any action"), *AuditAction.choices], required=False)
    object_type = forms.CharField(required=False, label="Object type")
    actor = forms.CharField(required=False)
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))


class PromoteForm(StyledForm):
    revision = forms.TypedChoiceField(coerce=int, label="Revision")
    target_environment = forms.ModelChoiceField(
        queryset=Environment.objects.none(), label="Promote to", empty_label="Choose an environment"
    )

    def __init__(self, *args, deployment, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        revisions = list(deployment.revisions.order_by("-number").values_list("number", "reason"))
        self.fields["revision"].choices = [
            (n, f"Revision {n}{' — ' + reason if reason else ''}") for n, reason in revisions
        ]
        self.fields["target_environment"].queryset = (
            Environment.objects.filter(project_id=deployment.project_id)
            .exclude(pk=deployment.environment_id or 0)
            .order_by("name")
        )
