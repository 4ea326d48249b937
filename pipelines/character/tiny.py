"""Tiny consistent-character files in the official formats and layouts, for the tiny profile.

The DreamShaper XL Lightning stand-in is a single-file ldm checkpoint against the shared tiny SDXL
configs; OpenPose XL is a ``ControlNetModel`` state dict in one ``.safetensors`` beside its
``config.json`` (thibaud's layout); ``Eyes.pt`` is a tiny YOLOv8 pickled as ultralytics would, whose
class branch never fires: the tiny pictures are noise, in which an eye detector finds no eyes (the
detailer itself is tested with a detector that fires everywhere); the safety checker is its
diffusers folder with the CLIP preprocessor config. InstantID, plus-face, IdentityNet and CLIP-H are
the files face-to-sticker also reads, written by the same writers, so either endpoint's hook leaves
a profile both load; antelopev2 comes from the shared hook.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipelines.common.tiny_sdxl import (
    CLIP_VISION_WIDTH,
    CONTROLNET_HINT_CHANNELS,
    CROSS_ATTENTION_DIM,
    FACE_EMBEDDING_DIM,
    FACE_TOKENS,
    RESAMPLER_WIDTH,
    build_tiny_inpaint_pipeline,
    ip_adapter_attention_state,
    resampler_state,
    write_instantid_bin,
    write_clip_vision,
    write_controlnet,
    write_plus_face_safetensors,
    write_single_file_sdxl,
)
from pipelines.common.checkpoint import write_config_sidecar
from pipelines.common.tiny_yolo import SILENT_BIAS, TINY_YOLO, write_ultralytics_checkpoint
from pipelines.common.yolo_face import YoloV8
from pipelines.weights.manifest import load_manifest

SAFETY_WIDTH = 32
# The hint embedding's output gain: large enough that two poses give visibly different pictures.
HINT_GAIN = 10.0
CLIP_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True, "rescale_factor": 1 / 255,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "size": {"shortest_edge": 224}, "image_processor_type": "CLIPImageProcessor",
}


def _dest(dest: Path, entry: str) -> Path:
    path = dest / load_manifest()[entry].dest
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_openpose(path: Path, unet, seed: int) -> None:
    """thibaud's single ``OpenPoseXL2.safetensors``: diffusers ControlNet keys, fp32, config beside it."""
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_HINT_CHANNELS)
    generator = torch.Generator().manual_seed(seed)
    # ControlNets start with zero convolutions at the hint embedding's output and at every residual;
    # small random ones make the pose hint change the picture.
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith("controlnet_cond_embedding.conv_out"):
                param.copy_(torch.randn(param.shape, generator=generator) * HINT_GAIN)
            elif name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    controlnet.save_config(str(path.parent))
    save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, str(path))


def write_silent_yolo(path: Path, seed: int = 0) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = YoloV8(TINY_YOLO)
    with torch.no_grad():
        for class_branch in network.detect.cv3:
            class_branch[2].weight.zero_()
            class_branch[2].bias.fill_(SILENT_BIAS)
    write_ultralytics_checkpoint(path, TINY_YOLO, network.state_dict())
    write_config_sidecar(path, dataclasses.asdict(TINY_YOLO))


def write_safety_checker(folder: Path) -> None:
    """CompVis's checker at a tiny CLIP size. Its concept thresholds are 1 and cosine similarities
    at most 1, so the tiny checker never flags an image (tests flag by lowering them)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": SAFETY_WIDTH, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "vocab_size": 516,
                     "bos_token_id": 514, "eos_token_id": 515, "pad_token_id": 515},
        vision_config={"hidden_size": SAFETY_WIDTH, "intermediate_size": 37, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 224, "patch_size": 14},
        projection_dim=SAFETY_WIDTH,
    )
    StableDiffusionSafetyChecker(config).save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR, indent=1))


def write_tiny(dest: Path) -> None:
    dest = Path(dest)
    pipe = build_tiny_inpaint_pipeline(seed=11)
    write_single_file_sdxl(_dest(dest, "dreamshaper_xl_lightning"), pipe)
    write_instantid_bin(_dest(dest, "instantid.ip_adapter"),
                        resampler_state(RESAMPLER_WIDTH, 1, FACE_TOKENS, FACE_EMBEDDING_DIM,
                                        CROSS_ATTENTION_DIM, seed=4),
                        ip_adapter_attention_state(pipe.unet, seed=3))
    write_plus_face_safetensors(_dest(dest, "ip_adapter.plus_face_sdxl"),
                                resampler_state(RESAMPLER_WIDTH, 1, FACE_TOKENS, CLIP_VISION_WIDTH,
                                                CROSS_ATTENTION_DIM, seed=5),
                                ip_adapter_attention_state(pipe.unet, seed=6))
    write_controlnet(_dest(dest, "instantid.controlnet").parent, pipe.unet, seed=7)
    write_clip_vision(_dest(dest, "clip_vit_h.image_encoder").parent)
    write_openpose(_dest(dest, "controlnet.openpose_sdxl"), pipe.unet, seed=12)
    write_silent_yolo(_dest(dest, "eyes_yolov8"))
    write_safety_checker(_dest(dest, "safety_checker").parent)
