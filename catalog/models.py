"""The model catalog: models (Hugging Face, NGC, custom), Profile Bundles and MaaS mappings."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils.deconstruct import deconstructible

from projects.models import Organization, Project


@deconstructible
class ArtifactStorage(FileSystemStorage):
    """Uploaded model artifacts under settings.MODELDECK_DATA_DIR/artifacts, read at use time."""

    # Properties instead of FileSystemStorage's cached values so that the data directory a
    # process (or a test) configures is the one used, not the one seen at import.
    @property
    def base_location(self) -> str:  # type: ignore[override]
        return os.path.join(str(settings.MODELDECK_DATA_DIR), "artifacts")

    @property
    def location(self) -> str:  # type: ignore[override]
        return os.path.abspath(self.base_location)


class ModelSource(models.TextChoices):
    HUGGINGFACE = "huggingface", "Hugging Face"
    NGC = "ngc", "NVIDIA NIM (NGC)"
    CUSTOM = "custom", "Custom"


class CatalogModel(models.Model):
    """A catalog entry: what can be deployed. Has zero or more deployments."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200, help_text="Display name, unique in the organization.")
    source = models.CharField(max_length=20, choices=ModelSource.choices)
    description = models.TextField(blank=True)
    # Hugging Face
    repo_id = models.CharField(max_length=200, blank=True)
    revision = models.CharField(max_length=64, blank=True, help_text="Pinned commit sha.")
    # NGC / NIM
    ngc_image = models.CharField(
        max_length=300, blank=True, help_text="e.g. nvcr.io/nim/meta/llama-3.1-8b-instruct"
    )
    ngc_tag = models.CharField(max_length=100, blank=True)
    ngc_tags = models.JSONField(
        default=list, blank=True, help_text="Known tags, for in-place updates."
    )
    nim_profiles = models.JSONField(
        default=list, blank=True,
        help_text="The NIM image's model profiles at ngc_tag (catalog.ngc.NimProfile.as_dict); "
        "empty: not known, any profile name or id is accepted.",
    )  # fmt: skip
    # Custom
    storage_uri = models.CharField(max_length=500, blank=True)
    artifact = models.FileField(
        upload_to="%Y/%m/", blank=True, storage=ArtifactStorage(), max_length=300
    )
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    # Facts used by MaaS mappings and the GPU estimate
    task = models.CharField(
        max_length=50, blank=True, help_text="Pipeline tag, e.g. text-generation."
    )
    library = models.CharField(max_length=50, blank=True)
    license = models.CharField(max_length=100, blank=True)
    gated = models.BooleanField(default=False)
    parameters = models.BigIntegerField(null=True, blank=True)
    dtype = models.CharField(max_length=20, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    config = models.JSONField(
        default=dict, blank=True, help_text="Architecture facts from config.json."
    )
    tags = models.JSONField(default=list, blank=True)
    files = models.JSONField(
        default=list, blank=True, help_text="[{path, size}] at the pinned revision."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="model_name_unique_in_org"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:model_detail", args=[self.pk])

    def source_ref(self) -> str:
        """Where the weights come from, in one line: repo@sha, image:tag, or a storage URI."""
        if self.source == ModelSource.HUGGINGFACE:
            return f"{self.repo_id}@{self.revision[:12]}" if self.revision else self.repo_id
        if self.source == ModelSource.NGC:
            return f"{self.ngc_image}:{self.ngc_tag}" if self.ngc_tag else self.ngc_image
        return self.storage_uri or (self.artifact.name if self.artifact else "")


class Engine(models.TextChoices):
    VLLM = "vllm", "vLLM"
    NIM = "nim", "NVIDIA NIM"
    TGI = "tgi", "Text Generation Inference"
    TEI = "tei", "Text Embeddings Inference"
    TORCHSERVE = "torchserve", "TorchServe"


class ProfileBundle(models.Model):
    """A versioned recipe for running a model. Editing creates a new version; old ones stay."""

    organization = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="bundles",
        help_text="Empty for the built-in bundles every organization sees.",
    )
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(default=1)
    engine = models.CharField(max_length=20, choices=Engine.choices)
    image = models.CharField(max_length=300)
    default_args = models.JSONField(default=list, blank=True)
    variables = models.JSONField(
        default=list, blank=True, help_text="[{name, type, default, description}]"
    )
    labels = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    ENGINE_LABEL = "modeldeck.io/inference-engine"

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name", "version"], name="bundle_version_unique"
            ),
            # PostgreSQL treats NULLs as distinct, so built-ins (organization NULL) need their own.
            models.UniqueConstraint(
                fields=["name", "version"],
                condition=Q(organization__isnull=True),
                name="builtin_bundle_version_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def engine_label(self) -> str:
        return self.labels.get(self.ENGINE_LABEL, self.engine)

    @property
    def is_builtin(self) -> bool:
        return self.organization_id is None

    def get_absolute_url(self) -> str:
        return reverse("catalog:bundle_detail", args=[self.pk])

    def versions(self) -> models.QuerySet[ProfileBundle]:
        """Every version of this bundle, newest first."""
        return ProfileBundle.objects.filter(
            organization_id=self.organization_id, name=self.name
        ).order_by("-version")

    def latest(self) -> ProfileBundle:
        return self.versions().first() or self


class MaaSMapping(models.Model):
    """A project's rule: models matching (source + filters) deploy with this bundle. First match wins."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="maas_mappings")
    position = models.PositiveIntegerField(default=0)
    source = models.CharField(max_length=20, choices=ModelSource.choices)
    task = models.CharField(max_length=50, blank=True)
    name_pattern = models.CharField(
        max_length=200, blank=True, help_text="Shell-style pattern, e.g. meta-llama/*"
    )
    min_parameters = models.BigIntegerField(null=True, blank=True)
    max_parameters = models.BigIntegerField(null=True, blank=True)
    license = models.CharField(max_length=100, blank=True)
    bundle = models.ForeignKey(ProfileBundle, on_delete=models.PROTECT, related_name="mappings")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "position", "id"]
        verbose_name = "MaaS mapping"  # Django's default splits the name into "maa s mapping"
        verbose_name_plural = "MaaS mappings"

    def __str__(self) -> str:
        return f"Rule {self.position}: {self.source} → {self.bundle}"
