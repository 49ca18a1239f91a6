"""Run the whole sandbox (Kubernetes API emulator + kubelet + engine) until SIGINT/SIGTERM.

    python -m sandbox --kube-port 6443 --engine-port 8091 \
        [--nodes 2 --gpus-per-node 4 --gpu-product NVIDIA-L4 --gpu-memory-gb 24 --ready-delay 3
         --job-duration 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from sandbox.engine import SimulatedEngine, run_engine_in_thread
from sandbox.kubelet import NodePool, SandboxCluster
from sandbox.resources import CRD_SETS, CUSTOM


def _pool(text: str) -> NodePool:
    """`name:count:gpus:product:memory_gb[:taint]`, e.g. `a100:1:8:NVIDIA-A100-SXM4-80GB:80`."""
    parts = text.split(":")
    if len(parts) not in (5, 6):
        raise argparse.ArgumentTypeError("expected name:count:gpus:product:memory_gb[:taint]")
    try:
        return NodePool(
            name=parts[0],
            count=int(parts[1]),
            gpus_per_node=int(parts[2]),
            gpu_product=parts[3],
            gpu_memory_gb=int(parts[4]),
            gpu_taint=len(parts) == 6 and parts[5] == "taint",
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kube-port", type=int, default=6443)
    parser.add_argument("--engine-port", type=int, default=8091)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--gpu-product", default="NVIDIA-L4")
    parser.add_argument("--gpu-memory-gb", type=int, default=24)
    parser.add_argument(
        "--gpu-taint", action="store_true", help="taint GPU nodes nvidia.com/gpu=present:NoSchedule"
    )
    parser.add_argument("--pool", type=_pool, action="append", default=[],
                        help="extra node pool name:count:gpus:product:memory_gb[:taint] (repeatable)")  # fmt: skip
    parser.add_argument(
        "--ready-delay", type=float, default=float(os.environ.get("SANDBOX_COLD_START_SECONDS") or 3.0),
        help="seconds from scheduling to Ready: the pods' cold start (env SANDBOX_COLD_START_SECONDS)"
    )
    parser.add_argument(
        "--job-duration", type=float, default=None,
        help="seconds a Job's pod runs, e.g. a model pre-download (default: the ready delay)",
    )
    parser.add_argument(
        "--crds", default="", help=f"comma list of CRDs the cluster has: {','.join(CUSTOM)}, or the sets "
        f"{','.join(CRD_SETS)} (e.g. --crds nim-operator to have the NIM Operator)"
    )
    parser.add_argument("--network-port", type=int, default=0,
                        help="loopback port serving Ingress / HTTPRoute hosts and Service DNS (0: any)")  # fmt: skip
    parser.add_argument("--token", default=None, help="require this bearer token on API requests")
    parser.add_argument(
        "--bad-image", action="append", default=[], help="image (prefix) that fails to pull"
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="write a kubeconfig for the emulator here"
    )
    parser.add_argument("--engine-latency-ms", type=float, default=None)
    parser.add_argument("--engine-token-ms", type=float, default=None)
    parser.add_argument(
        "--model", action="append", default=[], help="model the engine lists up front"
    )
    parser.add_argument(
        "--no-engine",
        action="store_true",
        help="don't serve the engine here (run `uvicorn sandbox.engine:app` apart)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pools = [
        NodePool(count=args.nodes, gpus_per_node=args.gpus_per_node, gpu_product=args.gpu_product,
                 gpu_memory_gb=args.gpu_memory_gb, gpu_taint=args.gpu_taint),
        *args.pool,
    ]  # fmt: skip
    pools = [p for p in pools if p.count > 0]
    crds = [c.strip() for c in args.crds.split(",") if c.strip()]
    cluster = SandboxCluster(host=args.host, port=args.kube_port, crds=crds, token=args.token,
                             network_port=args.network_port,
                             node_pools=pools, ready_delay=args.ready_delay, bad_images=args.bad_image,
                             job_duration=args.job_duration)  # fmt: skip
    kube_url = cluster.start()
    engine_url, stop_engine = "(not served: --no-engine)", lambda: None
    if not args.no_engine:
        engine = SimulatedEngine(
            models=args.model, latency_ms=args.engine_latency_ms, token_ms=args.engine_token_ms
        )
        engine_url, stop_engine = run_engine_in_thread(args.engine_port, args.host, engine=engine)
        cluster.network.engine_url = engine_url
        cluster.kubelet.engine = engine  # the pods' logs show the requests it answers
    if args.kubeconfig:
        cluster.emulator.kubeconfig(args.kubeconfig)
    gpus = sum(p.count * p.gpus_per_node for p in pools)
    print(f"Kubernetes API: {kube_url}", flush=True)
    print(f"Engine:         {engine_url}", flush=True)
    print(f"Ingress/DNS:    {cluster.network.url} (routes by Host header)", flush=True)
    print(
        f"Nodes: {sum(p.count for p in pools)} ({gpus} GPUs); CRDs: {', '.join(crds) or 'none'}",
        flush=True,
    )
    if args.kubeconfig:
        print(f"Kubeconfig:     {args.kubeconfig}", flush=True)

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    stop_engine()
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
