"""One log format for the server and uvicorn, with the request id on every line.

The id lives in a context variable: the HTTP middleware binds it per request (threadpool calls
inherit it), and a worker binds the job's id while it runs the job. ``--log-format json`` writes
one JSON object per line for log collectors.
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import warnings

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# What uvicorn logs besides our access lines; its own access log is replaced by ours.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, log_format: str) -> None:
    """Route the root logger (and uvicorn's, which then propagate) through one handler."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def quiet_third_party() -> None:
    """No progress bars or library warnings in server logs (issue 9): the CLI tools keep them.
    Set before any pipeline imports the libraries that read these variables."""
    for name, value in (("TQDM_DISABLE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                        ("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(name, value)
    warnings.simplefilter("ignore")
    for noisy in ("transformers", "diffusers", "huggingface_hub", "onnxruntime", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
