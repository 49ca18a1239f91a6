"""Seed the built-in Profile Bundles (organization=None) every install starts with, one per engine."""

from django.db import migrations

ENGINE_LABEL = "modeldeck.io/inference-engine"

# Frozen here on purpose: a data migration must not follow later edits of application code.
BUILTIN_BUNDLES = [
    {
        "name": "vllm",
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.8.5",
        "description": "vLLM's OpenAI-compatible server for Hugging Face text-generation models on NVIDIA GPUs.",
        "default_args": ["--dtype", "auto"],
        "variables": [
            {
                "name": "gpu_memory_utilization",
                "type": "number",
                "default": 0.9,
                "description": "Share of each GPU's memory vLLM may use for weights, activations and KV cache.",
            },
            {
                "name": "max_num_seqs",
                "type": "integer",
                "default": 256,
                "description": "Sequences batched together at most.",
            },
            {
                "name": "enforce_eager",
                "type": "boolean",
                "default": False,
                "description": "Disable CUDA graphs (less memory, slower).",
            },
        ],
    },
    {
        "name": "nim-llm",
        "engine": "nim",
        "image": "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3",
        "description": "NVIDIA NIM for LLMs; an NGC catalog entry's own image and tag replace this default image.",
        "default_args": [],
        "variables": [
            {
                "name": "max_model_len",
                "type": "integer",
                "default": None,
                "description": "NIM_MAX_MODEL_LEN: the longest context served (empty: the model's).",
            },
            {
                "name": "enable_kv_cache_reuse",
                "type": "boolean",
                "default": True,
                "description": "NIM_ENABLE_KV_CACHE_REUSE: prefix caching.",
            },
        ],
    },
    {
        "name": "tgi",
        "engine": "tgi",
        "image": "ghcr.io/huggingface/text-generation-inference:3.0.1",
        "description": "Hugging Face Text Generation Inference with its OpenAI-compatible Messages API.",
        "default_args": [],
        "variables": [
            {
                "name": "max_input_tokens",
                "type": "integer",
                "default": None,
                "description": "Longest prompt accepted (empty: TGI chooses from the model).",
            },
            {
                "name": "max_total_tokens",
                "type": "integer",
                "default": None,
                "description": "Prompt plus completion tokens at most.",
            },
        ],
    },
    {
        "name": "tei",
        "engine": "tei",
        "image": "ghcr.io/huggingface/text-embeddings-inference:1.5",
        "description": "Hugging Face Text Embeddings Inference on NVIDIA GPUs, for /v1/embeddings.",
        "default_args": [],
        "variables": [
            {
                "name": "max_batch_tokens",
                "type": "integer",
                "default": 16384,
                "description": "Tokens in one batch at most.",
            },
            {
                "name": "max_client_batch_size",
                "type": "integer",
                "default": 32,
                "description": "Inputs one request may send.",
            },
        ],
    },
    {
        "name": "tei-cpu",
        "engine": "tei",
        "image": "ghcr.io/huggingface/text-embeddings-inference:cpu-1.5",
        "description": "Text Embeddings Inference on CPU: small embedding models without a GPU.",
        "default_args": [],
        "variables": [
            {
                "name": "max_batch_tokens",
                "type": "integer",
                "default": 16384,
                "description": "Tokens in one batch at most.",
            },
        ],
    },
]


def seed(apps, schema_editor):
    ProfileBundle = apps.get_model("catalog", "ProfileBundle")
    for spec in BUILTIN_BUNDLES:
        if ProfileBundle.objects.filter(organization=None, name=spec["name"]).exists():
            continue  # an install that already has it (or a newer version) keeps its own
        ProfileBundle.objects.create(
            organization=None,
            version=1,
            labels={ENGINE_LABEL: spec["engine"], "modeldeck.io/builtin": "true"},
            **spec,
        )


def unseed(apps, schema_editor):
    ProfileBundle = apps.get_model("catalog", "ProfileBundle")
    names = [b["name"] for b in BUILTIN_BUNDLES]
    ProfileBundle.objects.filter(
        organization=None, name__in=names, version=1, mappings__isnull=True
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0003_artifact_storage_files_builtin_unique"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
