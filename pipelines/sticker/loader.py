"""Official face-to-sticker files → the loaded components (sticker-and-character.md §2.1, §2.3, §8).

Manifest id of every role; each is read offline from its installed path:
* AlbedoBase XL v1.3, a single-file SDXL checkpoint, converted against the ``sdxl.base.*``
  configs and tokenizers; StickersRedmond fused at 1.0;
* InstantID ``ip-adapter.bin`` + plus-face through ``load_ip_adapter`` (InstantID first);
  IdentityNet and the Zoe-depth ControlNet as diffusers folders; CLIP-ViT-H;
* Zoe depth, RMBG-1.4 (IS-Net), antelopev2's SCRFD-10G and glintr100 (ONNX).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from pipelines.common.arcface import ArcFace
from pipelines.common.instantid import SDXLComponents, load_controlnet, load_sdxl_components
from pipelines.common.scrfd import SCRFD

from . import config
from .background import BackgroundRemover, ISNetRemover, load_mask_network
from .depth import ZoeDepth

ROLES = {
    "checkpoint": "albedobase_xl_v13",
    "sdxl_config": "sdxl.base.model_index",
    "lora": "stickers_redmond_lora",
    "instantid_adapter": "instantid.ip_adapter",
    "identitynet": "instantid.controlnet",
    "plus_face": "ip_adapter.plus_face_sdxl",
    "image_encoder": "clip_vit_h.image_encoder",
    "depth_controlnet": "controlnet.zoe_depth_sdxl",
    "depth_estimator": "zoe_depth.nyu",
    "background": "rmbg_1.4",  # or BACKGROUND_REMOVERS[LoadOptions.background_remover]
    "detector": "insightface.antelopev2.scrfd_10g_bnkps",
    "recognizer": "insightface.antelopev2.glintr100",
}
# LoadOptions.background_remover → the weight file (§8: RMBG-1.4 is non-commercial).
BACKGROUND_REMOVERS = {"rmbg-1.4": "rmbg_1.4", "isnet-general-use": "isnet_general_use"}
# upscale=true only (not required by the manifest): ESRGAN file and the DreamShaper 8 folder.
UPSCALE_ROLES = {"esrgan": "upscaler.4x_animesharp", "sd15": "dreamshaper_8.model_index"}
UPSCALE_FOLDER_PREFIX = "dreamshaper_8."
# Files read through their folder (configs, tokenizers) rather than opened by role.
FOLDER_PREFIXES = ("sdxl.base.", "instantid.controlnet.config", "clip_vit_h.image_encoder.config",
                   "controlnet.zoe_depth_sdxl.config", "zoe_depth.nyu.")


@dataclass
class StickerComponents:
    sdxl: SDXLComponents
    depth_controlnet: object
    depth: ZoeDepth
    background: BackgroundRemover
    detector: SCRFD
    recognizer: ArcFace


def load_components(files: Mapping[str, Path], device: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> StickerComponents:
    """``files``: ROLES name → installed path."""
    sdxl = load_sdxl_components(files, device, dtype, lora=(files["lora"], config.LORA_SCALE))
    depth_controlnet = load_controlnet(files["depth_controlnet"].parent, dtype).to(device).eval()
    return StickerComponents(
        sdxl=sdxl,
        depth_controlnet=depth_controlnet,
        depth=ZoeDepth.load(files["depth_estimator"].parent, device),
        background=ISNetRemover(load_mask_network(files["background"], device)),
        # antelopev2 runs on the CPU in the workflow (§2.1); ONNX Runtime picks the device here.
        detector=SCRFD(files["detector"], device=device),
        recognizer=ArcFace(files["recognizer"], device=device),
    )
