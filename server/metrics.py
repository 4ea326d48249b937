"""Prometheus metrics, in a per-app registry: requests and latencies, queue depth and wait, run
time and failures per endpoint, each pipeline's load state, and GPU memory (utilisation where
NVML is installed)."""
from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
LOAD_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class GpuCollector:
    """CUDA memory per device, read from torch only if a pipeline has already imported it (the
    server itself never imports torch); utilisation from NVML when ``pynvml`` is installed."""

    def collect(self):
        memory = GaugeMetricFamily("facefoundry_gpu_memory_bytes", "CUDA memory held by PyTorch",
                                   labels=["device", "kind"])
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            for index in range(torch.cuda.device_count()):
                device = f"cuda:{index}"
                memory.add_metric([device, "allocated"], float(torch.cuda.memory_allocated(index)))
                memory.add_metric([device, "reserved"], float(torch.cuda.memory_reserved(index)))
        yield memory
        utilisation = GaugeMetricFamily("facefoundry_gpu_utilization_ratio",
                                        "GPU busy fraction over NVML's last sample period", labels=["device"])
        for device, ratio in nvml_utilisation():
            utilisation.add_metric([device], ratio)
        yield utilisation


def nvml_utilisation() -> list[tuple[str, float]]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        return [(f"cuda:{i}", pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i)).gpu / 100)
                for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError:
        return []


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("facefoundry_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("facefoundry_request_seconds", "HTTP request latency",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("facefoundry_inference_seconds", "Pipeline run time per job",
                                   ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("facefoundry_queue_wait_seconds", "Time a job waited before it ran",
                                    ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.failures = Counter("facefoundry_job_failures", "Jobs that did not succeed, by reason "
                                "(input, pipeline, out_of_memory, unavailable, timeout, cancelled, shutdown)",
                                ["endpoint", "reason"], registry=self.registry)
        self.queue_depth = Gauge("facefoundry_queue_depth", "Jobs waiting for a worker", ["endpoint"],
                                 registry=self.registry)
        self.load_state = Gauge("facefoundry_pipeline_state", "1 for the state each pipeline is in",
                                ["endpoint", "device", "state"], registry=self.registry)
        self.load_seconds = Histogram("facefoundry_pipeline_load_seconds", "Time to load a pipeline",
                                      ["endpoint", "device"], buckets=LOAD_BUCKETS, registry=self.registry)
        self.webhooks = Counter("facefoundry_webhook_deliveries", "Webhook calls by outcome",
                                ["outcome"], registry=self.registry)
        self.registry.register(GpuCollector())

    def render(self) -> bytes:
        return generate_latest(self.registry)
