"""Official consistent-character files → the loaded components (sticker-and-character.md §3.1, §3.5, §8).

Manifest id of every role; each is read offline from its installed path:
* DreamShaper XL Lightning, a single-file SDXL checkpoint, converted against the ``sdxl.base.*``
  configs and tokenizers;
* InstantID ``ip-adapter.bin`` + plus-face through ``load_ip_adapter`` (InstantID first);
  IdentityNet as its diffusers folder, CLIP-ViT-H;
* OpenPose XL: thibaud's ``OpenPoseXL2.safetensors`` (the file ComfyUI loads), whose keys are
  diffusers' ``ControlNetModel`` keys, built from the ``config.json`` beside it and loaded strictly;
* ``Eyes.pt`` through the restricted YOLOv8 loader; the safety checker folder;
* antelopev2's SCRFD-10G and glintr100 (ONNX).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file

from pipelines.common.arcface import ArcFace
from pipelines.common.checkpoint import load_strict
from pipelines.common.instantid import SDXLComponents, load_sdxl_components
from pipelines.common.scrfd import SCRFD
from pipelines.common.yolo_loader import load_yolo_face

from .eye_detailer import EyeDetailer
from .safety import SafetyChecker

ROLES = {
    "checkpoint": "dreamshaper_xl_lightning",
    "sdxl_config": "sdxl.base.model_index",
    "instantid_adapter": "instantid.ip_adapter",
    "identitynet": "instantid.controlnet",
    "plus_face": "ip_adapter.plus_face_sdxl",
    "image_encoder": "clip_vit_h.image_encoder",
    "openpose": "controlnet.openpose_sdxl",
    "eyes": "eyes_yolov8",
    "safety_checker": "safety_checker",
    "detector": "insightface.antelopev2.scrfd_10g_bnkps",
    "recognizer": "insightface.antelopev2.glintr100",
}
# Files read through their folder (configs, tokenizers) rather than opened by role.
FOLDER_PREFIXES = ("sdxl.base.", "instantid.controlnet.config", "clip_vit_h.image_encoder.config",
                   "controlnet.openpose_sdxl.config", "safety_checker.")


@dataclass
class CharacterComponents:
    sdxl: SDXLComponents
    openpose: object
    eyes: EyeDetailer
    safety: SafetyChecker
    detector: SCRFD
    recognizer: ArcFace


def load_openpose(weights: Path, dtype: torch.dtype = torch.float32):
    """OpenPose XL from its single ``.safetensors`` (diffusers keys) and the ``config.json`` beside it."""
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_config(ControlNetModel.load_config(str(Path(weights).parent)))
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    load_strict(controlnet, state, f"OpenPose XL ControlNet {Path(weights).name}")
    return controlnet.to(dtype).eval()


def load_components(files: Mapping[str, Path], device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> CharacterComponents:
    """``files``: ROLES name → installed path."""
    sdxl = load_sdxl_components(files, device, dtype)
    return CharacterComponents(
        sdxl=sdxl,
        openpose=load_openpose(files["openpose"], dtype).to(device),
        # The detector stays float32, as ultralytics runs it (expression-editor.md §2.7).
        eyes=EyeDetailer(load_yolo_face(files["eyes"], device)),
        safety=SafetyChecker.load(files["safety_checker"].parent, device),
        detector=SCRFD(files["detector"], device=device),
        recognizer=ArcFace(files["recognizer"], device=device),
    )
