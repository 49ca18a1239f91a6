"""Model-as-a-Service: which Profile Bundle a project deploys a catalog model with (first matching rule wins)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from django.db.models import F, Q

from catalog.models import CatalogModel, MaaSMapping, ModelSource, ProfileBundle
from projects.models import Project


@dataclass(frozen=True)
class RuleCheck:
    """Why one rule did or did not match, for the mappings page's "try a model"."""

    position: int
    rule: MaaSMapping
    matched: bool
    reason: str


@dataclass(frozen=True)
class Resolution:
    """The outcome of resolving a model: a bundle and the rule that chose it, or a message why none."""

    bundle: ProfileBundle | None
    rule: MaaSMapping | None
    position: int | None  # 1-based place of the rule in the project's order
    message: str
    checks: tuple[RuleCheck, ...] = field(default=())

    @property
    def matched(self) -> bool:
        return self.bundle is not None


def _names(model: CatalogModel) -> list[str]:
    """What a name pattern is matched against: the source's own name, then the catalog name."""
    names = []
    if model.source == ModelSource.HUGGINGFACE and model.repo_id:
        names.append(model.repo_id)
    if model.source == ModelSource.NGC and model.ngc_image:
        image = model.ngc_image
        names += [image, image.removeprefix("nvcr.io/")]
    if model.source == ModelSource.CUSTOM and model.storage_uri:
        names.append(model.storage_uri)
    names.append(model.name)
    return [n.lower() for n in names]


def _human_params(n: int) -> str:
    return f"{n / 1e9:g}B" if n >= 1e9 else f"{n / 1e6:g}M"


def rule_mismatch(rule: MaaSMapping, model: CatalogModel) -> str | None:
    """None when the rule matches the model, else the first reason it does not."""
    if rule.source != model.source:
        return f"source is {model.source}, the rule wants {rule.source}"
    if rule.task and rule.task.lower() != (model.task or "").lower():
        return f"task is {model.task or 'unknown'}, the rule wants {rule.task}"
    if rule.name_pattern and not any(
        fnmatchcase(n, rule.name_pattern.lower()) for n in _names(model)
    ):
        return f"name does not match {rule.name_pattern}"
    if rule.min_parameters is not None or rule.max_parameters is not None:
        if model.parameters is None:
            return "the model's parameter count is unknown, the rule has a size range"
        if rule.min_parameters is not None and model.parameters < rule.min_parameters:
            return f"{_human_params(model.parameters)} parameters, the rule wants at least {_human_params(rule.min_parameters)}"
        if rule.max_parameters is not None and model.parameters > rule.max_parameters:
            return f"{_human_params(model.parameters)} parameters, the rule wants at most {_human_params(rule.max_parameters)}"
    if rule.license and rule.license.lower() != (model.license or "").lower():
        return f"license is {model.license or 'unknown'}, the rule wants {rule.license}"
    return None


# The rules every new project starts with (catalog.services.mappings_default_apply), in order:
# (source, task, bundle name). The organization's own bundle of that name wins over the
# built-in one, so an organization sets its defaults by keeping bundles of these names.
DEFAULT_RULES: tuple[tuple[str, str, str], ...] = (
    (ModelSource.HUGGINGFACE, "text-generation", "vllm"),
    (ModelSource.HUGGINGFACE, "feature-extraction", "tei"),
    (ModelSource.HUGGINGFACE, "sentence-similarity", "tei"),
    (ModelSource.NGC, "", "nim-llm"),
)


def default_rule_bundle(organization_id: int, name: str) -> ProfileBundle | None:
    """The bundle a default rule names: the organization's own newest version, else the built-in."""
    return (
        ProfileBundle.objects.filter(name=name)
        .filter(Q(organization_id=organization_id) | Q(organization__isnull=True))
        .order_by(F("organization_id").asc(nulls_last=True), "-version")
        .first()
    )


def resolve(project: Project, model: CatalogModel) -> Resolution:
    """The bundle `project`'s MaaS mappings choose for `model`: the first rule in order that matches.

    A rule names a bundle; the bundle's newest version is used, so editing a bundle (which makes
    a new version) takes effect for new deployments without touching the rules. No match is an
    answer with a message, never an exception.
    """
    rules = list(
        MaaSMapping.objects.filter(project=project)
        .select_related("bundle")
        .order_by("position", "id")
    )
    checks: list[RuleCheck] = []
    for index, rule in enumerate(rules, start=1):
        reason = rule_mismatch(rule, model)
        checks.append(RuleCheck(index, rule, reason is None, reason or "matches"))
        if reason is None:
            bundle = rule.bundle.latest()
            return Resolution(
                bundle=bundle,
                rule=rule,
                position=index,
                message=f"Rule {index} of project “{project.name}” matches {model.name}: deploy with {bundle}.",
                checks=tuple(checks),
            )
    facts = ", ".join(
        f for f in (f"source {model.source}", f"task {model.task}" if model.task else "") if f
    )
    if not rules:
        message = (
            f"Project “{project.name}” has no MaaS mappings, so no Profile Bundle is chosen for {model.name}: "
            "add a rule on the project's MaaS mappings page or pick a bundle."
        )
    else:
        message = (
            f"None of the {len(rules)} MaaS mapping rule(s) of project “{project.name}” matches {model.name} "
            f"({facts}): add a rule for it or pick a bundle."
        )
    return Resolution(bundle=None, rule=None, position=None, message=message, checks=tuple(checks))


# --- Runtime suggestion ------------------------------------------------------------------------

# Tasks (Hugging Face pipeline tags) each built-in runtime serves.
TEXT_GENERATION_TASKS = frozenset(
    {"text-generation", "text2text-generation", "conversational", "image-text-to-text"}
)
EMBEDDING_TASKS = frozenset({"feature-extraction", "sentence-similarity"})
RERANKER_TASKS = frozenset({"text-ranking", "text-classification"})
RUNTIME_LABELS = {"vllm": "vLLM", "tei": "TEI", "torchserve": "TorchServe", "nim": "NVIDIA NIM"}


@dataclass(frozen=True)
class RuntimeSuggestion:
    """The runtime a model would run on and why; ``engine`` is "" when no built-in one fits."""

    engine: str
    reason: str

    @property
    def label(self) -> str:
        return RUNTIME_LABELS.get(self.engine, "No built-in runtime")

    def __str__(self) -> str:
        return f"{self.label}: {self.reason}"


def _is_torch_archive(model: CatalogModel) -> bool:
    name = model.artifact.name if model.artifact else model.storage_uri
    return (name or "").lower().endswith(".mar")


def suggest_runtime(model: CatalogModel) -> RuntimeSuggestion:
    """The runtime the catalog and the deploy form suggest for a model, with the reason.

    Only a suggestion: a chosen Profile Bundle, a MaaS rule or an image on the deployment
    overrides it. NGC images carry their own engine (NIM); `.mar` archives are TorchServe's
    format; otherwise the model's task decides (text generation → vLLM, embeddings and
    rerankers → TEI), and a task none of them serves is said plainly.
    """
    if model.source == ModelSource.NGC:
        return RuntimeSuggestion(
            "nim", "an NGC NIM image ships its own optimized engine; NVIDIA NIM runs it as is."
        )
    if _is_torch_archive(model):
        return RuntimeSuggestion(
            "torchserve",
            "a .mar file is a TorchServe model archive (handler and weights together).",
        )
    task = (model.task or "").lower()
    if task in TEXT_GENERATION_TASKS:
        return RuntimeSuggestion(
            "vllm", f"task {task}: vLLM serves text generation (OpenAI chat and completions)."
        )
    if task in EMBEDDING_TASKS:
        return RuntimeSuggestion(
            "tei", f"task {task}: Text Embeddings Inference serves embedding models."
        )
    if task in RERANKER_TASKS:
        return RuntimeSuggestion(
            "tei", f"task {task}: Text Embeddings Inference serves rerankers and classifiers."
        )
    if not task:
        return RuntimeSuggestion(
            "", "the model's task is unknown, so no runtime can be suggested; pick a Profile Bundle "
            "or give an image.",
        )  # fmt: skip
    return RuntimeSuggestion(
        "", f"no built-in runtime serves {task} models (vLLM: text generation; TEI: embeddings and "
        "rerankers; TorchServe: .mar archives; NIM: NGC images); pick a Profile Bundle or give an image.",
    )  # fmt: skip
