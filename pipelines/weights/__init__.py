"""Weights: the manifest, the verified downloader, the licence policy and the tiny profile.

``facefoundry weights download|check|list|tiny`` maps onto ``weights_command``; the server reads
its weights directory through ``weights_dir_for`` and labels responses with ``profile_of``.
Nothing here imports torch.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.weights.manifest import DEFAULT_WEIGHTS_DIR

PROFILE_FILE = "PROFILE.json"


def weights_dir_for(setting: str | None) -> Path:
    """The weights directory for ``FACEFOUNDRY_WEIGHTS``: unset → weights/, "tiny" → weights/tiny/, else a path."""
    if not setting:
        return DEFAULT_WEIGHTS_DIR
    if setting == "tiny":
        return DEFAULT_WEIGHTS_DIR / "tiny"
    return Path(setting)


def profile_of(weights_dir: Path) -> str:
    """"tiny" for a directory made by make_tiny_weights.py (its PROFILE.json says so), else "full"."""
    marker = Path(weights_dir) / PROFILE_FILE
    if marker.is_file():
        return json.loads(marker.read_text()).get("profile", "full")
    return "full"


def weights_command(argv: list[str]) -> int:
    """``weights download|check|list|tiny [args…]`` for the ``facefoundry`` CLI."""
    if not argv or argv[0] not in {"download", "check", "list", "tiny"}:
        print("usage: facefoundry weights {download,check,list,tiny} [PIPELINE…] [options]")
        return 2
    command, rest = argv[0], list(argv[1:])
    if command == "tiny":
        from pipelines.weights.tiny import main as tiny_main

        return tiny_main(rest)
    from pipelines.weights.download import main as download_main

    flag = {"download": [], "check": ["--check"], "list": ["--list"]}[command]
    return download_main(rest + flag)
