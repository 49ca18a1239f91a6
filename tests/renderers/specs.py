"""Specs the renderer tests share: a plain one per engine and the variations every test walks."""

from __future__ import annotations

from typing import Any

from deployments.renderers import ModelCache, RenderSpec

SHA = "0e9e39f249a16976918f6564b8830bc894c89659"

IMAGES = {
    "vllm": "vllm/vllm-openai:v0.6.3",
    "nim": "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3",
    "tgi": "ghcr.io/huggingface/text-generation-inference:3.0.1",
    "tei": "ghcr.io/huggingface/text-embeddings-inference:1.5",
}
CPU_IMAGES = {
    "vllm": "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.8.5",
    "tgi": "ghcr.io/huggingface/text-generation-inference:3.0.1-intel-cpu",
    "tei": "ghcr.io/huggingface/text-embeddings-inference:cpu-1.5",
}
MODELS = {
    "vllm": "meta-llama/Llama-3.1-8B-Instruct",
    "nim": "meta/llama-3.1-8b-instruct",
    "tgi": "mistralai/Mistral-7B-Instruct-v0.3",
    "tei": "BAAI/bge-large-en-v1.5",
}

# Everything a user can set, set: what a big multi-GPU deployment in a tainted pool looks like.
AFFINITY: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {
                            "key": "topology.kubernetes.io/zone",
                            "operator": "In",
                            "values": ["us-east-1a"],
                        }
                    ]
                }
            ]
        }
    },
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "big"}},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }
        ]
    },
}
TOLERATIONS = [
    {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"},
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]


def make_spec(engine: str = "vllm", /, **overrides: Any) -> RenderSpec:
    """A valid one-GPU spec for `engine`; keyword arguments replace fields."""
    fields: dict[str, Any] = {
        "deployment_id": 42,
        "deployment_name": "chat",
        "revision": 3,
        "namespace": "team-a",
        "engine": engine,
        "image": IMAGES[engine],
        "model_source": "ngc" if engine == "nim" else "huggingface",
        "model_ref": MODELS[engine],
        "project": "research",
    }
    if engine in ("vllm", "tgi", "tei"):
        fields["secret_env"] = {"HF_TOKEN": ("hf-token", "token")}
    fields.update(overrides)
    return RenderSpec(**fields)


def big_spec(engine: str, **overrides: Any) -> RenderSpec:
    """Four GPUs (one for TEI, which can't shard) and every option in use."""
    fields: dict[str, Any] = {
        "deployment_name": "big",
        "replicas": 2,
        "gpus": 1 if engine == "tei" else 4,
        "gpu_type": "NVIDIA-H100-80GB-HBM3",
        "cpu": "16",
        "memory": "128Gi",
        "context_length": 32768,
        "model_revision": SHA if engine != "nim" else None,
        "env": {"LOG_LEVEL": "debug", "OMP_NUM_THREADS": "8"},
        "labels": {"team": "research", "cost-center": "ml-42"},
        "annotations": {"prometheus.io/scrape": "true", "example.com/owner": "ada@example.com"},
        "tolerations": TOLERATIONS,
        "node_selector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
        "affinity": AFFINITY,
        "model_cache": ModelCache(size="500Gi", storage_class="fast-rwx"),
        "image_pull_secrets": ("registry-cred",),
        "startup_budget_seconds": 3600,
        "served_model_name": "big-model",
    }
    if engine == "vllm":
        fields["bundle_args"] = ("--gpu-memory-utilization", "0.9", "--max-num-seqs", "128")
        fields["extra_args"] = ("--max-num-seqs", "64", "--enable-chunked-prefill")
        fields["engine_vars"] = {"dtype": "bfloat16", "trust_remote_code": "true"}
    elif engine == "tgi":
        fields["bundle_args"] = ("--dtype", "bfloat16")
        fields["extra_args"] = ("--max-concurrent-requests", "256")
        fields["engine_vars"] = {"quantize": "fp8"}
    elif engine == "tei":
        fields["max_client_batch_size"] = 64
        fields["extra_args"] = ("--max-batch-tokens", "65536")
        fields["engine_vars"] = {"pooling": "cls"}
    elif engine == "nim":
        fields["nim_profile"] = "tensorrt_llm-h100-fp8-tp4-throughput"
        fields["engine_vars"] = {"log_level": "INFO"}  # NIM_LOG_LEVEL, documented
        fields["secret_env"] = {
            "NGC_API_KEY": ("ngc-api", "NGC_API_KEY"),
            "HF_TOKEN": ("hf-token", "token"),
        }
    fields.update(overrides)
    return make_spec(engine, **fields)


def cpu_spec(engine: str, **overrides: Any) -> RenderSpec:
    return make_spec(engine, gpus=0, cpu="8", memory="32Gi", image=CPU_IMAGES[engine], **overrides)


def pvc_spec(engine: str, **overrides: Any) -> RenderSpec:
    return make_spec(
        engine,
        model_source="custom",
        model_ref="pvc://model-store/llama/8b-finetune",
        served_model_name="llama-ft",
        **overrides,
    )


def all_specs() -> list[tuple[str, RenderSpec]]:
    """(test id, spec) for every engine and variation that must render."""
    specs: list[tuple[str, RenderSpec]] = []
    for engine in ("vllm", "nim", "tgi", "tei"):
        specs.append((f"{engine}-1gpu", make_spec(engine)))
        specs.append((f"{engine}-big", big_spec(engine)))
        specs.append((f"{engine}-pvc-model", pvc_spec(engine)))
        specs.append(
            (f"{engine}-no-caching-0-replicas", make_spec(engine, prompt_caching=False, replicas=0))
        )
        if engine != "nim":
            specs.append((f"{engine}-0gpu", cpu_spec(engine)))
    specs.append(
        (
            "vllm-s3-model",
            make_spec("vllm", model_source="custom", model_ref="s3://models/llama-8b"),
        )
    )
    specs.append(
        (
            "nim-hf-model",
            make_spec(
                "nim",
                image="nvcr.io/nim/nvidia/llm-nim:1.12.0",
                model_source="huggingface",
                model_ref="Qwen/Qwen2.5-7B-Instruct",
                secret_env={"HF_TOKEN": ("hf-token", "token")},
            ),
        )
    )
    return specs
