"""Developer Hub form: a new API key (name, optional expiry, optional deployments)."""

from __future__ import annotations

from django import forms
from django.utils import timezone

from console.forms import IdsChoiceField, StyledForm
from projects.models import APIKeyScope


class APIKeyForm(StyledForm):
    name = forms.CharField(
        max_length=100,
        help_text="What will use this key, e.g. “support-bot staging”.",
        widget=forms.TextInput(attrs={"placeholder": "support-bot", "autocomplete": "off"}),
    )
    scope = forms.ChoiceField(
        choices=APIKeyScope.choices,
        initial=APIKeyScope.GATEWAY,
        required=False,  # older clients post only a name: a gateway key
        label="Use",
        help_text="Gateway keys call models; REST API keys call /api/v1/ as you (Authorization: Token …).",
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires",
        help_text="Optional. After this moment the gateway refuses the key (UTC).",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )
    deployments = IdsChoiceField(
        queryset=None,
        required=False,
        label="Limit to deployments",
        help_text="Optional. Leave empty to let the key call every deployment of the organization.",
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args, deployments=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["deployments"].queryset = deployments
        self.fields["deployments"].label_from_instance = lambda d: (
            f"{d.spec().get('served_model_name') or d.name} ({d.project.name})"
        )

    def clean_scope(self) -> str:
        return self.cleaned_data.get("scope") or APIKeyScope.GATEWAY

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the key a name.")
        return name

    def clean_expires_at(self):
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return value
