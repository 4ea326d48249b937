"""Writing YOLOv8 face checkpoints in the ultralytics ``.pt`` object layout, without ultralytics.

The in-house ``YoloV8`` modules mirror ultralytics' classes attribute for attribute, so pickling
one with each class written under its ultralytics path (yolov8_face README §3) gives the object
layout of ``face_yolov8n.pt``: a ``DetectionModel`` holding float16 tensors, ``yaml``, ``stride``
and ``names``. Used for tiny checkpoints and to write parity weights in the official format.
"""
from __future__ import annotations

import dataclasses
import pickle
import types
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from pipelines.common.checkpoint import load_strict, write_config_sidecar
from pipelines.expression_editor import yolo_face
from pipelines.expression_editor.yolo_face import YOLOV8_BACKBONE, YOLOV8_HEAD, YoloV8, YoloV8Config

ULTRALYTICS_PATHS = {
    yolo_face.YoloV8: ("ultralytics.nn.tasks", "DetectionModel"),
    yolo_face.Conv: ("ultralytics.nn.modules.conv", "Conv"),
    yolo_face.Concat: ("ultralytics.nn.modules.conv", "Concat"),
    yolo_face.C2f: ("ultralytics.nn.modules.block", "C2f"),
    yolo_face.Bottleneck: ("ultralytics.nn.modules.block", "Bottleneck"),
    yolo_face.SPPF: ("ultralytics.nn.modules.block", "SPPF"),
    yolo_face.DFL: ("ultralytics.nn.modules.block", "DFL"),
    yolo_face.Detect: ("ultralytics.nn.modules.head", "Detect"),
}

# Small enough for a < 2 MB file and fast CPU tests; same layout, reg_max and head as the real one.
TINY_YOLO = YoloV8Config(width_multiple=0.125, max_channels=512)


class UltralyticsPathPickler(pickle._Pickler):
    """Writes the in-house classes as GLOBALs under their ultralytics paths."""

    def save_global(self, obj, name=None):
        if obj in ULTRALYTICS_PATHS:
            module, qualname = ULTRALYTICS_PATHS[obj]
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("utf-8"))
            self.memoize(obj)
            return
        super().save_global(obj, name)


ultralytics_path_pickle = types.ModuleType("ultralytics_path_pickle")
ultralytics_path_pickle.Pickler = UltralyticsPathPickler


def _yaml_for(config: YoloV8Config) -> dict:
    return {
        "nc": config.nc,
        "scales": {"s0": [config.depth_multiple, config.width_multiple, config.max_channels]},
        "scale": "s0",
        "backbone": YOLOV8_BACKBONE,
        "head": YOLOV8_HEAD,
        "yaml_file": "yolov8-face.yaml",
    }


def write_ultralytics_checkpoint(path: Path, config: YoloV8Config,
                                 state: Mapping[str, np.ndarray | torch.Tensor] | None = None) -> None:
    """A ``torch.save`` archive (pickle protocol 2) laid out like a finished ultralytics training
    checkpoint, holding ``state`` (or the network's initial weights) in float16."""
    network = YoloV8(config)
    if state is not None:
        # torch.as_tensor keeps 0-d arrays (num_batches_tracked) 0-d.
        load_strict(network, {k: torch.as_tensor(v) for k, v in state.items()}, "YOLOv8 checkpoint writer")
    network.half()
    network.yaml = _yaml_for(config)
    network.names = {i: "face" if config.nc == 1 else str(i) for i in range(config.nc)}
    checkpoint = {
        "date": "2024-01-01T00:00:00+00:00",
        "version": "8.4.190",
        "epoch": -1,
        "best_fitness": None,
        "model": network,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"task": "detect", "imgsz": 640},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, str(path), pickle_module=ultralytics_path_pickle, pickle_protocol=2)


def write_tiny_yolo(path: Path, seed: int = 0) -> YoloV8Config:
    """A small random YOLOv8 face checkpoint in the ``face_yolov8n.pt`` layout, with its config sidecar."""
    torch.manual_seed(seed)
    write_ultralytics_checkpoint(Path(path), TINY_YOLO)
    write_config_sidecar(Path(path), dataclasses.asdict(TINY_YOLO))
    return TINY_YOLO
