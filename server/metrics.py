"""Prometheus metrics: requests, latencies, queue depth and GPU memory, in a per-app registry."""
from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class GpuMemoryCollector:
    """CUDA memory per device, read from torch only if a pipeline has already imported it:
    the server itself never imports torch."""

    def collect(self):
        family = GaugeMetricFamily("facefoundry_gpu_memory_bytes", "CUDA memory held by PyTorch",
                                   labels=["device", "kind"])
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            for index in range(torch.cuda.device_count()):
                device = f"cuda:{index}"
                family.add_metric([device, "allocated"], float(torch.cuda.memory_allocated(index)))
                family.add_metric([device, "reserved"], float(torch.cuda.memory_reserved(index)))
        yield family


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("facefoundry_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("facefoundry_request_seconds", "HTTP request latency",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("facefoundry_inference_seconds", "Pipeline run time per job",
                                   ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("facefoundry_queue_depth", "Jobs waiting for a worker", registry=self.registry)
        self.registry.register(GpuMemoryCollector())

    def render(self) -> bytes:
        return generate_latest(self.registry)
