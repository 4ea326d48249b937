"""Official face-restoration checkpoints -> modules, strictly (sadtalker.md §4.1, parity README §6).

| file | where the state dict is |
|---|---|
| ``GFPGANv1.4.pth`` | dict entry ``params_ema`` |
| ``parsing_parsenet.pth`` | the whole file (plain state dict) |

A ``<file>.config.json`` sidecar (tiny checkpoints) replaces the official configuration.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import torch

from .checkpoint import config_for, load_strict, read_state_file
from .gfpgan import GFPGANConfig, GFPGANv1Clean
from .parsenet import ParseNet, ParseNetConfig

GFPGAN_FILE = "GFPGANv1.4.pth"
PARSENET_FILE = "parsing_parsenet.pth"

T = TypeVar("T")


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def dataclass_config(cls: type[T], path: Path) -> T:
    """The configuration of the checkpoint at ``path`` as the frozen dataclass ``cls``, whose
    defaults are the official values; a sidecar's JSON lists become the tuples ``cls`` holds."""
    return cls(**{k: _tuples(v) for k, v in config_for(path, asdict(cls())).items()})


def load_gfpgan(path: Path, device: str | torch.device = "cpu") -> GFPGANv1Clean:
    state = read_state_file(path)["params_ema"]
    net = GFPGANv1Clean(dataclass_config(GFPGANConfig, path))
    return load_strict(net, state, f"GFPGAN ({path})").to(device)


def load_parsenet(path: Path, device: str | torch.device = "cpu") -> ParseNet:
    net = ParseNet(dataclass_config(ParseNetConfig, path))
    return load_strict(net, read_state_file(path), f"ParseNet ({path})").to(device)
