"""The pipelines loaded on one device: loads run in their own threads, never under a lock that a
request or another endpoint waits on (issue 12, "Loading").

A request for an endpoint that is loading waits on that load's future; a failed load is
remembered with its reason (the 503 that names it) and retried with exponential backoff; an
endpoint idle for ``idle_unload_s`` is dropped so its device memory is freed, and loads again on
its next request.
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from pipelines import registry
from pipelines.base import LicenceRefused, LoadOptions, WeightsMissing
from server.errors import ApiError
from server.metrics import Metrics
from server.settings import Settings

log = logging.getLogger("facefoundry.pool")

# A failed load is retried on demand after 5 s, then 10, 20, ... at most 5 min apart: soon enough
# for an operator who just installed the weights, rare enough not to thrash a broken install.
LOAD_RETRY_FIRST_S = 5.0
LOAD_RETRY_MAX_S = 300.0
LOADED, LOADING, NOT_LOADED, IDLE_UNLOADED = "loaded", "loading", "not loaded", "unloaded (idle)"


@dataclass(frozen=True)
class LoadFailure:
    state: str  # missing weights | licence refused | unavailable | failed
    message: str
    attempts: int
    retry_at: float

    def refusal(self, now: float) -> ApiError:
        wait = max(1, math.ceil(self.retry_at - now))
        return ApiError(503, self.message, {"Retry-After": str(wait)})


def retry_delay(attempts: int) -> float:
    return min(LOAD_RETRY_MAX_S, LOAD_RETRY_FIRST_S * 2 ** (attempts - 1))


def describe_load_failure(slug: str, exc: BaseException) -> tuple[str, str]:
    """(state, message for the 503) of what ``cls.load`` raised."""
    if isinstance(exc, WeightsMissing):
        return "missing weights", str(exc)
    if isinstance(exc, LicenceRefused):
        return "licence refused", f"{slug} needs a non-commercial component: {exc}"
    if isinstance(exc, (ImportError, AttributeError)):
        return "unavailable", f"the {slug} pipeline is not available in this installation ({exc})"
    return "failed", f"{slug} could not be loaded: {type(exc).__name__}: {str(exc)[:200]}"


def resolved_dtype(setting: str, device: str, pipeline_class: type) -> str:
    """``auto``: float16 on CUDA for a pipeline that declares ``half_precision`` (its parity allows
    it), float32 otherwise; CPU always computes in float32."""
    if not device.startswith("cuda"):
        return "float32"
    if setting == "auto":
        return "float16" if getattr(pipeline_class, "half_precision", False) else "float32"
    return setting


class ModelPool:
    def __init__(self, settings: Settings, device: str, metrics: Metrics):
        self.settings = settings
        self.device = device
        self.metrics = metrics
        self._lock = threading.Lock()  # guards the tables below only; never held during a load
        self._loaded: dict[str, Any] = {}
        self._loading: dict[str, Future] = {}
        self._failures: dict[str, LoadFailure] = {}
        self._idle: set[str] = set()
        self._runtime: dict[str, dict] = {}
        self._busy: collections.Counter[str] = collections.Counter()
        self._last_used: dict[str, float] = {}

    # -- loading ----------------------------------------------------------------------------

    def request(self, slug: str) -> Future:
        """A future of the loaded pipeline: resolved at once when loaded or when a remembered
        failure is not due for a retry; else the running load's, or a new load's."""
        now = time.time()
        with self._lock:
            future: Future = Future()
            if slug in self._loaded:
                future.set_result(self._loaded[slug])
                return future
            if slug in self._loading:
                return self._loading[slug]
            failure = self._failures.get(slug)
            if failure is not None and now < failure.retry_at:
                future.set_exception(failure.refusal(now))
                return future
            self._loading[slug] = future
        self._set_state_metric(slug, LOADING)
        threading.Thread(target=self._load, args=(slug, future), name=f"load-{slug}-{self.device}",
                         daemon=True).start()
        return future

    def _load(self, slug: str, future: Future) -> None:
        started = time.perf_counter()
        try:
            cls = registry.pipeline_class(slug)
            dtype = resolved_dtype(self.settings.dtype, self.device, cls)
            options = LoadOptions(weights_dir=self.settings.weights_dir, device=self.device, dtype=dtype,
                                  allow_noncommercial=self.settings.allow_noncommercial,
                                  max_audio_seconds=self.settings.max_audio_seconds,
                                  background_remover=self.settings.background_remover)
            pipeline = cls.load(options)
        except Exception as exc:
            state, message = describe_load_failure(slug, exc)
            with self._lock:
                attempts = self._failures[slug].attempts + 1 if slug in self._failures else 1
                failure = LoadFailure(state, message, attempts, time.time() + retry_delay(attempts))
                self._failures[slug] = failure
                del self._loading[slug]
            if state == "failed":
                log.error("loading %s on %s failed", slug, self.device, exc_info=exc)
            else:
                log.warning("%s on %s: %s", slug, self.device, message)
            self._set_state_metric(slug, state)
            future.set_exception(failure.refusal(time.time()))
            return
        runtime = {"device": self.device, "dtype": dtype, "onnx_providers": onnx_providers(pipeline)}
        with self._lock:
            self._loaded[slug] = pipeline
            self._runtime[slug] = runtime
            self._failures.pop(slug, None)
            self._idle.discard(slug)
            self._last_used[slug] = time.time()
            del self._loading[slug]
        seconds = time.perf_counter() - started
        self.metrics.load_seconds.labels(slug, self.device).observe(seconds)
        self._set_state_metric(slug, LOADED)
        log.info("loaded %s on %s (%s) in %.1f s", slug, self.device, dtype, seconds)
        future.set_result(pipeline)

    def acquire(self, slug: str):
        """The loaded pipeline, loading it if needed (ApiError 503 when it cannot be); pair with
        ``release`` so that an idle unload never drops a pipeline in use."""
        pipeline = self.request(slug).result()
        with self._lock:
            self._busy[slug] += 1
            self._last_used[slug] = time.time()
        return pipeline

    def release(self, slug: str) -> None:
        with self._lock:
            self._busy[slug] -= 1
            self._last_used[slug] = time.time()

    def unload_idle(self, now: float, idle_s: float) -> list[str]:
        """Drop the pipelines unused for ``idle_s`` seconds; their device memory goes back."""
        with self._lock:
            idle = [slug for slug in self._loaded
                    if self._busy[slug] == 0 and now - self._last_used.get(slug, now) > idle_s]
            dropped = [(slug, self._loaded.pop(slug)) for slug in idle]
            self._idle.update(idle)
        for slug, pipeline in dropped:
            release_memory(pipeline, slug)
            self._set_state_metric(slug, IDLE_UNLOADED)
            log.info("unloaded %s from %s after %.0f s idle", slug, self.device, idle_s)
        return idle

    def free_memory(self, slug: str) -> None:
        """After a CUDA OOM: let the pipeline drop its caches so the next request can run."""
        release_memory(self._loaded.get(slug), slug)

    # -- state ------------------------------------------------------------------------------

    def state(self, slug: str) -> tuple[str, str | None]:
        """(state, detail): loaded | loading | not loaded | unloaded (idle) | missing weights |
        licence refused | unavailable | failed."""
        with self._lock:
            if slug in self._loaded:
                return LOADED, None
            if slug in self._loading:
                return LOADING, None
            if slug in self._failures:
                return self._failures[slug].state, self._failures[slug].message
            return (IDLE_UNLOADED if slug in self._idle else NOT_LOADED), None

    def runtime(self, slug: str) -> dict | None:
        return self._runtime.get(slug)

    def components(self, slug: str) -> list[dict]:
        pipeline = self._loaded.get(slug)
        return pipeline.components() if pipeline is not None else []

    def _set_state_metric(self, slug: str, state: str) -> None:
        for known in (LOADED, LOADING, NOT_LOADED, IDLE_UNLOADED, "missing weights", "licence refused",
                      "unavailable", "failed"):
            self.metrics.load_state.labels(slug, self.device, known).set(1.0 if known == state else 0.0)


def release_memory(pipeline, slug: str) -> None:
    hook = getattr(pipeline, "free_memory", None)
    if callable(hook):
        try:
            hook()
        except Exception as exc:
            log.warning("free_memory of %s failed: %s", slug, exc)


def onnx_providers(pipeline) -> list[str]:
    """The onnxruntime execution providers the pipeline's sessions actually use (for /ready)."""
    report = getattr(pipeline, "onnx_providers", None)
    return list(report()) if callable(report) else []
