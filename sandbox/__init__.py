"""The sandbox compute pool: a local Kubernetes API, a simulated kubelet and a simulated engine."""

from sandbox.engine import SimulatedEngine, run_engine_in_thread
from sandbox.kubeapi import KubeEmulator
from sandbox.kubelet import Kubelet, NodePool, SandboxCluster, start_cluster

__all__ = [
    "KubeEmulator",
    "Kubelet",
    "NodePool",
    "SandboxCluster",
    "SimulatedEngine",
    "run_engine_in_thread",
    "start_cluster",
]
