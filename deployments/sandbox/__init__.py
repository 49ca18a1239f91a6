"""The sandbox compute pool: a local Kubernetes API, a simulated kubelet and a simulated engine."""

from deployments.sandbox.engine import SimulatedEngine, run_engine_in_thread
from deployments.sandbox.kubeapi import KubeEmulator
from deployments.sandbox.kubelet import Kubelet, NodePool, SandboxCluster, start_cluster

__all__ = [
    "KubeEmulator",
    "Kubelet",
    "NodePool",
    "SandboxCluster",
    "SimulatedEngine",
    "run_engine_in_thread",
    "start_cluster",
]
