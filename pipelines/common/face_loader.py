"""Official facexlib detection/alignment checkpoints -> modules, strictly (sadtalker.md §4.1,
parity README §6).

| file | where the state dict is |
|---|---|
| ``detection_Resnet50_Final.pth`` | the whole file; keys may carry a ``module.`` prefix (DataParallel) |
| ``alignment_WFLW_4HG.pth`` | dict entry ``state_dict`` |

A ``<file>.config.json`` sidecar (tiny checkpoints) replaces the official configuration.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipelines.common.checkpoint import load_strict, read_state_file
from pipelines.common.face_restore_loader import dataclass_config

from .fan_awing import FAN, FANConfig
from .retinaface import RetinaFace, RetinaFaceConfig

RETINAFACE_FILE = "detection_Resnet50_Final.pth"
FAN_FILE = "alignment_WFLW_4HG.pth"


def load_retinaface(path: Path, device: str | torch.device = "cpu") -> RetinaFace:
    # facexlib strips the DataParallel prefix key by key.
    state = {k.removeprefix("module."): v for k, v in read_state_file(path).items()}
    net = RetinaFace(dataclass_config(RetinaFaceConfig, path))
    return load_strict(net, state, f"RetinaFace ({path})").to(device)


def load_fan(path: Path, device: str | torch.device = "cpu") -> FAN:
    state = read_state_file(path)["state_dict"]
    return load_strict(FAN(dataclass_config(FANConfig, path)), state, f"AWing FAN ({path})").to(device)
