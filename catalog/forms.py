"""Forms of the catalog pages; they parse input, the services decide."""

from __future__ import annotations

import json
from decimal import Decimal

from django import forms

from catalog import estimate as estimate_lib
from catalog.models import Engine, ModelSource
from catalog.services import (
    MAX_PARAMETERS,
    PARAMETERS_TOO_MANY,
    STORAGE_EXAMPLES,
    bundle_field_errors,
    validate_storage_uri,
)
from console.api_parsers import MAX_JSON_DEPTH, json_depth_exceeds
from console.forms import StyledForm

HUB_TASKS = [
    ("", "Any task"),
    ("text-generation", "Text generation"),
    ("image-text-to-text", "Image-text to text"),
    ("feature-extraction", "Feature extraction (embeddings)"),
    ("sentence-similarity", "Sentence similarity"),
    ("text-classification", "Text classification"),
    ("automatic-speech-recognition", "Speech recognition"),
    ("text-to-image", "Text to image"),
]
HUB_LIBRARIES = [
    ("", "Any library"),
    ("transformers", "Transformers"),
    ("sentence-transformers", "Sentence Transformers"),
    ("diffusers", "Diffusers"),
    ("gguf", "GGUF"),
    ("mlx", "MLX"),
]
HUB_SORTS = [
    ("downloads", "Most downloads"),
    ("likes", "Most likes"),
    ("trending", "Trending"),
    ("last_modified", "Recently updated"),
]
GPU_CHOICES = [("", "No GPU chosen")] + [
    (key, gpu.name) for key, gpu in estimate_lib.GPU_TYPES.items()
]
BILLION = Decimal(1_000_000_000)


class ProjectChoiceMixin:
    """A `project` select limited to the projects the user may see in the current organization."""

    def _set_projects(self, projects, *, required: bool = False, help_text: str = "") -> None:
        field = self.fields["project"]
        field.queryset = projects
        field.required = required
        if help_text:
            field.help_text = help_text


class HubSearchForm(ProjectChoiceMixin, forms.Form):
    q = forms.CharField(
        required=False,
        label="Search",
        widget=forms.TextInput(
            attrs={
                "placeholder": "Search models, e.g. qwen",
                "autocomplete": "off",
                "type": "search",
            }
        ),
    )
    task = forms.ChoiceField(required=False, choices=HUB_TASKS)
    library = forms.ChoiceField(required=False, choices=HUB_LIBRARIES)
    author = forms.CharField(
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "Author, e.g. meta-llama"}),
    )
    sort = forms.ChoiceField(required=False, choices=HUB_SORTS)
    page = forms.IntegerField(required=False, min_value=1, max_value=50)
    project = forms.ModelChoiceField(queryset=None, required=False, empty_label="No token")

    def __init__(self, *args, projects=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_projects(
            projects, help_text="Its Hugging Face token is used for the search and gated models."
        )


class HubAddForm(ProjectChoiceMixin, StyledForm):
    repo_id = forms.CharField(max_length=200, widget=forms.HiddenInput)
    name = forms.CharField(
        max_length=200, required=False, help_text="Name in the catalog; the repo id if empty."
    )
    revision = forms.CharField(
        max_length=100,
        required=False,
        help_text="Branch, tag or commit (default main); pinned to its commit sha.",
        widget=forms.TextInput(attrs={"placeholder": "main"}),
    )
    project = forms.ModelChoiceField(queryset=None, required=False, empty_label="No token")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, projects=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_projects(
            projects,
            help_text="Whose Hugging Face token reads the model (needed for gated models).",
        )


class NgcAddForm(ProjectChoiceMixin, StyledForm):
    image = forms.CharField(max_length=300, widget=forms.HiddenInput)
    tag = forms.ChoiceField(
        choices=[],
        help_text="The deployment's starting version; later updates choose among these tags.",
    )
    name = forms.CharField(
        max_length=200, required=False, help_text="Name in the catalog; the image name if empty."
    )
    project = forms.ModelChoiceField(queryset=None)

    def __init__(self, *args, projects=None, tags=(), **kwargs):
        super().__init__(*args, **kwargs)
        self._set_projects(projects, required=True, help_text="Whose NGC API key reads the image.")
        self.fields["tag"].choices = [(t, t) for t in tags]


class CustomModelForm(StyledForm):
    name = forms.CharField(max_length=200)
    storage_uri = forms.CharField(
        max_length=500,
        required=False,
        label="Storage URI",
        help_text=f"Where the weights are: {STORAGE_EXAMPLES}.",
        widget=forms.TextInput(attrs={"placeholder": "s3://bucket/models/my-model"}),
    )
    artifact = forms.FileField(
        required=False,
        label="…or upload a file",
        help_text="Stored under the console's data directory with its sha256.",
    )
    task = forms.ChoiceField(required=False, choices=HUB_TASKS, initial="text-generation")
    parameters_billions = forms.DecimalField(
        required=False,
        min_value=Decimal("0.001"),
        max_value=Decimal(100000),
        decimal_places=3,
        label="Parameters (billions)",
    )
    license = forms.CharField(max_length=100, required=False)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_storage_uri(self) -> str:
        value = self.cleaned_data.get("storage_uri", "").strip()
        if value:
            try:
                validate_storage_uri(value)
            except forms.ValidationError as exc:
                raise forms.ValidationError(exc.message_dict["storage_uri"]) from None
        return value

    def clean(self):
        data = super().clean()
        if not self.errors and bool(data.get("storage_uri")) == bool(data.get("artifact")):
            self.add_error("storage_uri", "Give either a storage URI or a file to upload.")
        return data

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        billions = data.get("parameters_billions")
        return {
            "name": data["name"],
            "storage_uri": data.get("storage_uri", ""),
            "artifact": data.get("artifact"),
            "task": data.get("task", ""),
            "parameters": int(billions * BILLION) if billions else None,
            "license": data.get("license", ""),
            "description": data.get("description", ""),
        }


class ModelEditForm(StyledForm):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


class EstimateForm(forms.Form):
    context_length = forms.IntegerField(
        min_value=1,
        max_value=10_000_000,
        required=False,
        help_text="Tokens per sequence; empty: the model's maximum.",
    )
    concurrency = forms.IntegerField(
        min_value=1,
        max_value=4096,
        initial=1,
        required=False,
        help_text="Sequences at full length at once.",
    )
    gpu_type = forms.ChoiceField(choices=GPU_CHOICES, required=False, label="GPU type")


class JSONListField(forms.CharField):
    """A JSON value typed in a textarea; shown pretty-printed."""

    def __init__(self, *args, kind: type = list, **kwargs):
        self.kind = kind
        kwargs.setdefault(
            "widget", forms.Textarea(attrs={"rows": 4, "class": "mono", "spellcheck": "false"})
        )
        kwargs.setdefault("required", False)
        super().__init__(*args, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, (list, dict)):
            return json.dumps(value, indent=2)
        return value

    def to_python(self, value):
        value = super().to_python(value)
        if not value:
            return self.kind()
        try:
            parsed = json.loads(value)
        except RecursionError:
            raise forms.ValidationError(f"Nested too deeply: at most {MAX_JSON_DEPTH} levels of lists and objects.") from None
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}).") from None
        if json_depth_exceeds(parsed):
            raise forms.ValidationError(f"Nested too deeply: at most {MAX_JSON_DEPTH} levels of lists and objects.")
        if not isinstance(parsed, self.kind):
            raise forms.ValidationError(
                f"Expected a JSON {'list' if self.kind is list else 'object'}."
            )
        return parsed


class BundleForm(StyledForm):
    name = forms.CharField(
        max_length=100, help_text="Lowercase letters, digits and dashes; cannot change later."
    )
    engine = forms.ChoiceField(choices=Engine.choices)
    image = forms.CharField(
        max_length=300, help_text="With a tag or digest, e.g. vllm/vllm-openai:v0.8.5."
    )
    default_args = JSONListField(
        help_text='Engine arguments as a JSON list, e.g. ["--dtype", "auto"].'
    )
    variables = JSONListField(
        help_text='[{"name": "max_num_seqs", "type": "integer", "default": 256, "description": "…"}]; types: string, integer, number, boolean.'
    )
    labels = JSONListField(
        kind=dict,
        help_text='Kubernetes labels; "modeldeck.io/inference-engine" is what compute pools are matched on (the engine if empty).',
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if editing:
            self.fields["name"].disabled = True

    def clean(self):
        data = super().clean()
        # The service's rules (name, image, labels) beside the form's own errors (a JSON field
        # that doesn't parse), so one submit shows them all; a field with an error keeps only it.
        errors = bundle_field_errors(
            name=data.get("name") or "", engine=data.get("engine") or "", image=data.get("image") or "",
            default_args=data.get("default_args"), variables=data.get("variables"), labels=data.get("labels"),
        )  # fmt: skip
        for key, messages in errors.items():
            if key in self.fields and key not in self.errors:
                self.add_error(key, messages)
        return data


class MappingForm(StyledForm):
    source = forms.ChoiceField(choices=ModelSource.choices)
    task = forms.ChoiceField(
        choices=[("", "Any task")] + HUB_TASKS[1:] + [("text-ranking", "Text ranking")],
        required=False,
    )
    name_pattern = forms.CharField(
        max_length=200,
        required=False,
        help_text="Shell-style, e.g. meta-llama/* or *-Instruct; empty: any name.",
    )
    min_billions = forms.DecimalField(
        required=False, min_value=0, max_value=MAX_PARAMETERS // BILLION, decimal_places=3,
        label="Smallest (billions of parameters)", error_messages={"max_value": PARAMETERS_TOO_MANY},
    )
    max_billions = forms.DecimalField(
        required=False, min_value=0, max_value=MAX_PARAMETERS // BILLION, decimal_places=3,
        label="Largest (billions of parameters)", error_messages={"max_value": PARAMETERS_TOO_MANY},
    )
    license = forms.CharField(
        max_length=100, required=False, help_text="e.g. apache-2.0; empty: any license."
    )
    bundle = forms.ModelChoiceField(queryset=None)

    def __init__(self, *args, bundles=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["bundle"].queryset = bundles
        self.fields["bundle"].label_from_instance = lambda b: (
            f"{b.name} ({b.get_engine_display()}){' · built-in' if b.is_builtin else ''}"
        )

    def clean(self):
        data = super().clean()
        lo, hi = data.get("min_billions"), data.get("max_billions")
        if lo is not None and hi is not None and lo > hi:
            self.add_error("max_billions", "The largest size must not be below the smallest.")
        return data

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        lo, hi = data.get("min_billions"), data.get("max_billions")
        return {
            "source": data["source"],
            "task": data.get("task", ""),
            "name_pattern": data.get("name_pattern", ""),
            "min_parameters": int(lo * BILLION) if lo is not None else None,
            "max_parameters": int(hi * BILLION) if hi is not None else None,
            "license": data.get("license", ""),
            "bundle": data["bundle"],
        }
