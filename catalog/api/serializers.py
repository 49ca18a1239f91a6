"""Serializers of the catalog API: they shape input and output; the services decide."""

from __future__ import annotations

from rest_framework import serializers

from catalog.maas import suggest_runtime
from catalog.models import CatalogModel, Engine, MaaSMapping, ModelSource, ProfileBundle


class CatalogModelSerializer(serializers.ModelSerializer):
    source_ref = serializers.CharField(read_only=True)
    deployment_count = serializers.SerializerMethodField()
    artifact = serializers.SerializerMethodField()
    suggested_runtime = serializers.SerializerMethodField()

    class Meta:
        model = CatalogModel
        fields = [
            "id",
            "organization",
            "name",
            "source",
            "source_ref",
            "description",
            "repo_id",
            "revision",
            "ngc_image",
            "ngc_tag",
            "ngc_tags",
            "nim_profiles",
            "storage_uri",
            "artifact",
            "artifact_sha256",
            "task",
            "library",
            "license",
            "gated",
            "parameters",
            "dtype",
            "size_bytes",
            "config",
            "tags",
            "files",
            "deployment_count",
            "suggested_runtime",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_suggested_runtime(self, obj: CatalogModel) -> dict[str, str]:
        """{engine, label, reason}; engine "" when no built-in runtime serves the model."""
        found = suggest_runtime(obj)
        return {"engine": found.engine, "label": found.label, "reason": found.reason}

    def get_deployment_count(self, obj: CatalogModel) -> int:
        return obj.deployments.count()

    def get_artifact(self, obj: CatalogModel) -> str | None:
        return obj.artifact.name if obj.artifact else None


class ModelCreateSerializer(serializers.Serializer):
    """One body for every source: huggingface (repo_id, revision), ngc (image, tag), custom (storage_uri)."""

    source = serializers.ChoiceField(choices=ModelSource.choices)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    project = serializers.IntegerField(
        required=False, allow_null=True, help_text="Whose HF token / NGC key is used."
    )
    repo_id = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    revision = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    image = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    tag = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    storage_uri = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    task = serializers.CharField(max_length=50, required=False, allow_blank=True, default="")
    parameters = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, default=None
    )
    license = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    def validate(self, data):
        required = {"huggingface": "repo_id", "ngc": "image", "custom": "storage_uri"}[
            data["source"]
        ]
        if not data.get(required):
            raise serializers.ValidationError({required: f"Required for source {data['source']}."})
        if data["source"] == "custom" and not data.get("name"):
            raise serializers.ValidationError({"name": "Required for a custom model."})
        return data


class ModelUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)


class HubSearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(required=False, allow_blank=True, default="")
    task = serializers.CharField(required=False, allow_blank=True, default="")
    library = serializers.CharField(required=False, allow_blank=True, default="")
    author = serializers.CharField(required=False, allow_blank=True, default="")
    sort = serializers.ChoiceField(
        choices=["downloads", "likes", "trending", "last_modified"],
        required=False,
        default="downloads",
    )
    page = serializers.IntegerField(required=False, min_value=1, max_value=50, default=1)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)
    project = serializers.IntegerField(required=False, allow_null=True, default=None)


class HubDetailQuerySerializer(serializers.Serializer):
    repo_id = serializers.CharField(max_length=200)
    revision = serializers.CharField(required=False, allow_blank=True, default="")
    project = serializers.IntegerField(required=False, allow_null=True, default=None)


class EstimateQuerySerializer(serializers.Serializer):
    context_length = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=10_000_000, default=None
    )
    concurrency = serializers.IntegerField(required=False, min_value=1, max_value=4096, default=1)
    gpu_type = serializers.CharField(required=False, allow_blank=True, default="")


class NgcImagesQuerySerializer(serializers.Serializer):
    q = serializers.CharField(required=False, allow_blank=True, default="")
    page = serializers.IntegerField(required=False, min_value=1, max_value=100, default=1)


class NgcTagsQuerySerializer(serializers.Serializer):
    image = serializers.CharField(max_length=300)
    project = serializers.IntegerField(required=False, allow_null=True, default=None)


class BundleSerializer(serializers.ModelSerializer):
    builtin = serializers.BooleanField(source="is_builtin", read_only=True)
    engine_label = serializers.CharField(read_only=True)

    class Meta:
        model = ProfileBundle
        fields = [
            "id",
            "organization",
            "name",
            "version",
            "engine",
            "engine_label",
            "image",
            "default_args",
            "variables",
            "labels",
            "description",
            "builtin",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "organization",
            "version",
            "engine_label",
            "builtin",
            "created_at",
        ]
        validators: list = []


class BundleWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    engine = serializers.ChoiceField(choices=Engine.choices, required=False)
    image = serializers.CharField(max_length=300, required=False)
    default_args = serializers.ListField(
        child=serializers.CharField(allow_blank=True), required=False
    )
    variables = serializers.ListField(child=serializers.DictField(), required=False)
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    organization = serializers.IntegerField(required=False, allow_null=True)


class MappingSerializer(serializers.ModelSerializer):
    bundle_name = serializers.CharField(source="bundle.name", read_only=True)

    class Meta:
        model = MaaSMapping
        fields = [
            "id",
            "project",
            "position",
            "source",
            "task",
            "name_pattern",
            "min_parameters",
            "max_parameters",
            "license",
            "bundle",
            "bundle_name",
            "created_at",
        ]
        read_only_fields = ["id", "position", "bundle_name", "created_at"]


class MappingWriteSerializer(serializers.Serializer):
    project = serializers.IntegerField(required=False)
    source = serializers.ChoiceField(choices=ModelSource.choices, required=False)
    task = serializers.CharField(max_length=50, required=False, allow_blank=True)
    name_pattern = serializers.CharField(max_length=200, required=False, allow_blank=True)
    min_parameters = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    max_parameters = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    license = serializers.CharField(max_length=100, required=False, allow_blank=True)
    bundle = serializers.IntegerField(required=False)


class MappingReorderSerializer(serializers.Serializer):
    project = serializers.IntegerField()
    order = serializers.ListField(child=serializers.IntegerField(), allow_empty=True)


class ResolveQuerySerializer(serializers.Serializer):
    project = serializers.IntegerField()
    model = serializers.IntegerField()
