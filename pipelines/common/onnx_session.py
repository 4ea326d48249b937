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


def providers_for(device: str | None = None) -> list:
    """CUDA for a ``cuda``/``cuda:N`` device (the default) when the installed onnxruntime has it,
    else CPU. The CPU provider always comes last so that operators CUDA lacks
    fall back to it.
    """
    device = "cuda" if device is None else str(device)
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


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
            _SESSIONS[key] = session
        return session
