"""Writing YOLOv8 face checkpoints in the ultralytics ``.pt`` object layout, without ultralytics.

The in-house ``YoloV8`` modules mirror ultralytics' classes attribute for attribute, so pickling
one with each class written under its ultralytics path (yolov8_face README §3) gives the object
layout of ``face_yolov8n.pt``: a ``DetectionModel`` holding float16 tensors, ``yaml``, ``stride``
and ``names``. Used for tiny checkpoints and to write parity weights in the official format.

The tiny checkpoint is random (He-initialised) except for its detection head, which is set so
that the detector answers predictably on any picture (``predictable_face_head``): with a random
head no score reaches the node's 0.7 threshold on real photos, so the tiny profile would only ever
answer "no face detected" and never run the LivePortrait networks behind the detector.
"""
from __future__ import annotations

import dataclasses
import pickle
import types
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from pipelines.common.checkpoint import load_strict, write_config_sidecar
from pipelines.common import yolo_face
from pipelines.common.yolo_face import YOLOV8_BACKBONE, YOLOV8_HEAD, YoloV8, YoloV8Config

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


# The head of the tiny detector (see predictable_face_head).
BOX_SIDE_BIN = 4        # every box side lies 4 strides from its anchor: 8-stride squares
BIN_LOGIT = 30.0        # softmax(30 on one bin, 0 elsewhere) is that bin to float32 precision
CLASS_GAIN = 1000.0     # BatchNorm scale of both class-branch convs of the firing level
FIRE_BIAS = -4.0        # sigmoid(-4) = 0.018: what an all-zero feature map scores
SILENT_BIAS = -20.0     # the levels that never fire


@torch.no_grad()
def predictable_face_head(network: YoloV8) -> YoloV8:
    """Make a freshly initialised tiny network detect faces by construction, in place.

    * Every ``Conv`` gets He-normal weights: torch's default init shrinks the features by ~1e-11
      over the 22 layers, far below anything a threshold can tell apart from zero.
    * Only the coarsest level (stride 32, 20×20 anchors at 640) can fire, which keeps NMS short
      and the boxes large. Its class branch scores sum_k h_k·tanh(h_k/2) of the second conv's
      output h: the conv's output channels come in opposite pairs (h, −h), and
      SiLU(h) + SiLU(−h) = h·tanh(h/2) ≥ 0, zero only for h = 0. With both BatchNorm scales at
      1000 this is ≫ 4 wherever the image is not black (≥ 50 even where every pixel is 1), so
      the score is exactly 1.0 there.
    * An all-black image that letterboxes without grey padding (e.g. a square one) gives exactly
      zero features, because no conv before the head has a bias and BatchNorm is the identity at
      init: every logit is its bias, −4, below 0.7. That is the tiny profile's "no face" image.
    * The box branch ignores the features: each anchor's box is the square of side 8 strides
      (256 letterbox px, 40 % of the longer image side) centred on the anchor.

    On a non-black image all stride-32 boxes tie at 1.0, so NMS (IoU 0.7) keeps a lattice of them in
    anchor order, and ``select_face_box`` takes the top-row box whose centre is nearest the image's
    horizontal centre (within 16 letterbox px); it is ≥ 30 px wide when the longer image side is
    ≥ 75 px."""
    for module in network.modules():
        if isinstance(module, yolo_face.Conv):
            nn.init.kaiming_normal_(module.conv.weight, nonlinearity="relu")
    head = network.detect
    box_bias = torch.zeros(4, head.reg_max)
    box_bias[:, BOX_SIDE_BIN] = BIN_LOGIT
    for box_branch, class_branch in zip(head.cv2, head.cv3):
        box_branch[2].weight.zero_()
        box_branch[2].bias.copy_(box_bias.reshape(-1))
        class_branch[2].weight.zero_()
        class_branch[2].bias.fill_(SILENT_BIAS)
    first, second, score = head.cv3[-1]
    first.bn.weight.fill_(CLASS_GAIN)
    second.bn.weight.fill_(CLASS_GAIN)
    second.conv.weight[1::2] = -second.conv.weight[0::2]
    score.weight.fill_(1.0)
    score.bias.fill_(FIRE_BIAS)
    return network


def write_tiny_yolo(path: Path, seed: int = 0) -> YoloV8Config:
    """A small YOLOv8 face checkpoint in the ``face_yolov8n.pt`` layout, random but for its
    predictable head, with its config sidecar."""
    # Module init draws from the global generator; seed it without disturbing the caller's stream.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = predictable_face_head(YoloV8(TINY_YOLO))
    write_ultralytics_checkpoint(Path(path), TINY_YOLO, network.state_dict())
    write_config_sidecar(Path(path), dataclasses.asdict(TINY_YOLO))
    return TINY_YOLO
