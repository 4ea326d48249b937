"""onnxruntime sessions for the InsightFace model files, one per file per process.

Detector, recogniser and swapper are shared by several pipelines (face swap, head swap, sticker),
and a session holds the whole model in memory (554 MB for inswapper_128), so each file is opened
once and the session is reused.
"""
from __future__ import annotations

import threading
from pathlib import Path

import onnxruntime as ort

_SESSIONS: dict[tuple[str, str], ort.InferenceSession] = {}
_LOCK = threading.Lock()


class CudaUnavailable(RuntimeError):
    """CUDA was asked for and onnxruntime cannot give it: an error at load, never a slow server
    quietly running on the CPU (issue 12)."""


def providers_for(device: str | None = None) -> list:
    """CUDA for a ``cuda``/``cuda:N`` device, CPU for ``cpu``; no device: CUDA when the installed
    onnxruntime has it, else CPU. The CPU provider always comes last so that operators CUDA lacks
    fall back to it. A CUDA device without onnxruntime's CUDA provider raises CudaUnavailable.
    """
    available = "CUDAExecutionProvider" in ort.get_available_providers()
    if device is None:
        device = "cuda" if available else "cpu"
    device = str(device)
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    if not available:
        raise CudaUnavailable(f"{device} was requested but this onnxruntime has no CUDAExecutionProvider "
                              f"(install onnxruntime-gpu, or serve with --device cpu)")
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def onnx_session(path: Path | str, device: str | None = None) -> ort.InferenceSession:
    """The process-wide session for the model file at ``path`` (created on first use)."""
    providers = providers_for(device)
    key = (str(Path(path).resolve()), repr(providers))
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            if not Path(path).is_file():
                raise FileNotFoundError(path)
            options = ort.SessionOptions()
            # inswapper's emap initializer is used by no node (§3.5): onnxruntime warns that it
            # drops it on every load, which is expected, so only errors are logged.
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
            # onnxruntime drops a provider that fails to initialise (missing CUDA/cuDNN libraries)
            # with only a log line: refuse rather than run a CUDA deployment on the CPU.
            if providers[0] != "CPUExecutionProvider" and session.get_providers()[0] != "CUDAExecutionProvider":
                raise CudaUnavailable(f"onnxruntime could not start CUDA for {Path(path).name} "
                                      f"(providers in use: {session.get_providers()})")
            _SESSIONS[key] = session
        return session
