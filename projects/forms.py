"""Forms of the projects pages; the service does the writing."""

from __future__ import annotations

import json

from django import forms

from console.forms import StyledForm
from projects.models import (
    GPU_QUOTA_VALIDATORS,
    S3_FIELDS,
    IntegrationKind,
    Organization,
    Project,
    Role,
    slug_validator,
)


class ProjectForm(StyledForm):
    name = forms.CharField(max_length=100)
    slug = forms.CharField(
        max_length=30,
        required=False,
        validators=[slug_validator],
        help_text="Part of the Kubernetes namespace (<organization>-<slug> when free); cannot change later. "
        "Empty: made from the name.",
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    gpu_quota = forms.IntegerField(
        label="GPU quota",
        initial=4,
        validators=GPU_QUOTA_VALIDATORS,
        error_messages={"invalid": "Enter the GPU quota as a whole number, e.g. 4."},
        help_text="The most GPUs this project's deployments may hold together.",
        widget=forms.TextInput(attrs={"inputmode": "numeric"}),
    )

    def __init__(self, *args, organization: Organization, instance: Project | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.instance = instance
        if instance is not None:
            self.fields["slug"].disabled = True
            self.fields["slug"].required = False
            self.fields["slug"].help_text = f"Namespace {instance.namespace()} (fixed)."

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        others = Project.objects.filter(organization=self.organization, name__iexact=name)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise forms.ValidationError(f"A project named “{name}” already exists in {self.organization.name}.")
        return name

    def clean_slug(self) -> str:
        if self.instance is not None:
            return self.instance.slug
        slug = self.cleaned_data["slug"]
        if slug and Project.objects.filter(organization=self.organization, slug=slug).exists():
            raise forms.ValidationError(f"The slug “{slug}” is taken in {self.organization.name}.")
        return slug


class IntegrationForm(StyledForm):
    kind = forms.ChoiceField(choices=IntegrationKind.choices, widget=forms.HiddenInput)
    secret = forms.CharField(
        label="Token",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted. After saving only its last four characters are shown.",
    )
    # S3 credentials come as four fields; they are handed to the service as one JSON secret.
    access_key_id = forms.CharField(required=False, label="Access key id")
    secret_access_key = forms.CharField(
        required=False, label="Secret access key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )  # fmt: skip
    endpoint_url = forms.CharField(required=False, label="Endpoint URL (S3-compatible stores)")
    region = forms.CharField(required=False, label="Region")

    def clean(self) -> dict:
        data = super().clean()
        s3 = {key: data.pop(key, "") or "" for key in S3_FIELDS}
        if data.get("kind") == IntegrationKind.S3:
            data["secret"] = json.dumps(s3)
        return {"kind": data.get("kind"), "secret": data.get("secret") or ""}


class MemberAddForm(StyledForm):
    username = forms.CharField(label="Username or email", max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class InvitationForm(StyledForm):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args, **kwargs) -> None:
        # It shares the members page with MemberAddForm: its own ids, so each label finds its field.
        kwargs.setdefault("auto_id", "id_invite_%s")
        super().__init__(*args, **kwargs)


class InvitationSignupForm(StyledForm):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))


class GroupForm(StyledForm):
    name = forms.CharField(max_length=80)
    description = forms.CharField(max_length=300, required=False)
