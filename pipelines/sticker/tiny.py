"""Tiny face-to-sticker files in the official formats and layouts, for the tiny profile.

Every file is a small random one of the real class, written where the manifest installs the
official file: the AlbedoBase stand-in as a single-file ldm checkpoint (against the shared tiny
SDXL configs), the StickersRedmond LoRA in kohya layout, InstantID's ``ip-adapter.bin`` as a
nested ``torch.save`` dict, plus-face as a flat fp16 ``.safetensors``, the ControlNets, CLIP-H and
Zoe depth as their diffusers / transformers folders, RMBG-1.4 as a plain ``model.pth`` state dict
with its small configuration in a ``.config.json`` sidecar, IS-Net general-use as an ONNX export,
4x-AnimeSharp in the original ESRGAN
key layout, DreamShaper 8 as its diffusers folder. antelopev2 comes from the shared hook.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipelines.common.checkpoint import write_config_sidecar
from pipelines.common.tiny_sdxl import (
    CLIP_VISION_WIDTH,
    CROSS_ATTENTION_DIM,
    FACE_EMBEDDING_DIM,
    FACE_TOKENS,
    RESAMPLER_WIDTH,
    build_tiny_inpaint_pipeline,
    tiny_vae_config,
    write_tokenizer,
    ip_adapter_attention_state,
    lightning_lora_state,
    resampler_state,
    write_instantid_bin,
    write_clip_vision,
    write_controlnet,
    write_plus_face_safetensors,
    write_single_file_sdxl,
)
from pipelines.weights.manifest import load_manifest

from .isnet import ISNet
from .rrdbnet import RRDBNet, esrgan_state

ISNET_TINY = {"in_ch": 3, "out_ch": 1, "width": 8}
ZOE_PROCESSOR_SIDE = 64
ISNET_ONNX_SIDE = 64  # trace size only: the export takes any size
ESRGAN_TINY = {"features": 8, "blocks": 2, "growth": 4}
SD15_TEXT_WIDTH = 32
SD15_VAE_SCALING = 0.18215


def _dest(dest: Path, entry: str) -> Path:
    path = dest / load_manifest()[entry].dest
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_zoe_depth(folder: Path) -> None:
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    torch.manual_seed(0)
    backbone = BeitConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                          intermediate_size=64, out_features=["stage1", "stage2", "stage3", "stage4"],
                          reshape_hidden_states=False, use_relative_position_bias=True, add_fpn=False)
    config = ZoeDepthConfig(backbone_config=backbone, neck_hidden_sizes=[16, 16, 16, 16], fusion_hidden_size=16,
                            bottleneck_features=16, num_relative_features=8, bin_embedding_dim=16,
                            num_attractors=[4, 4, 4, 4], reassemble_factors=[4, 2, 1, 0.5], patch_size=16,
                            bin_configurations=[{"n_bins": 8, "min_depth": 1e-3, "max_depth": 10.0, "name": "nyu"}])
    ZoeDepthForDepthEstimation(config).save_pretrained(str(folder), safe_serialization=True)
    processor = {"image_processor_type": "ZoeDepthImageProcessor", "do_normalize": True, "image_mean": [0.5] * 3,
                 "image_std": [0.5] * 3, "keep_aspect_ratio": True, "ensure_multiple_of": 32,
                 "size": {"height": ZOE_PROCESSOR_SIDE, "width": ZOE_PROCESSOR_SIDE}}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))


def write_rmbg(path: Path) -> None:
    torch.manual_seed(0)
    net = ISNet(**ISNET_TINY)
    torch.save(net.state_dict(), str(path))
    write_config_sidecar(path, ISNET_TINY)


def write_isnet_onnx(path: Path) -> None:
    """IS-Net general-use's published form: an ONNX export, 1024² input, the mask as first output."""
    torch.manual_seed(1)
    net = ISNet(**ISNET_TINY).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, ISNET_ONNX_SIDE, ISNET_ONNX_SIDE),), str(path),
                      input_names=["input_image"], output_names=["mask"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_image": {2: "height", 3: "width"}})


def write_esrgan(path: Path) -> None:
    torch.manual_seed(0)
    torch.save(esrgan_state(RRDBNet(**ESRGAN_TINY)), str(path))


def write_sd15(folder: Path) -> None:
    """A DreamShaper-8-shaped SD1.5 diffusers folder (4-level VAE: 8x latents as the real one)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=64, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=SD15_TEXT_WIDTH, attention_head_dim=4, norm_num_groups=16)
    vae = AutoencoderKL(**{**tiny_vae_config(), "scaling_factor": SD15_VAE_SCALING, "force_upcast": False})
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=514, eos_token_id=515, hidden_size=SD15_TEXT_WIDTH,
                                        intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                        pad_token_id=515, vocab_size=516, hidden_act="quick_gelu"))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=scheduler,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    write_tokenizer(folder / "tokenizer")
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def write_tiny(dest: Path) -> None:
    dest = Path(dest)
    pipe = build_tiny_inpaint_pipeline(seed=1)
    write_single_file_sdxl(_dest(dest, "albedobase_xl_v13"), pipe)
    save_file(lightning_lora_state(pipe.unet, seed=2), str(_dest(dest, "stickers_redmond_lora")))
    attention = ip_adapter_attention_state(pipe.unet, seed=3)
    write_instantid_bin(_dest(dest, "instantid.ip_adapter"),
                        resampler_state(RESAMPLER_WIDTH, 1, FACE_TOKENS, FACE_EMBEDDING_DIM, CROSS_ATTENTION_DIM, seed=4),
                        attention)
    write_plus_face_safetensors(_dest(dest, "ip_adapter.plus_face_sdxl"),
                                resampler_state(RESAMPLER_WIDTH, 1, FACE_TOKENS, CLIP_VISION_WIDTH,
                                                CROSS_ATTENTION_DIM, seed=5),
                                ip_adapter_attention_state(pipe.unet, seed=6))
    write_controlnet(_dest(dest, "instantid.controlnet").parent, pipe.unet, seed=7)
    write_controlnet(_dest(dest, "controlnet.zoe_depth_sdxl").parent, pipe.unet, seed=8)
    write_clip_vision(_dest(dest, "clip_vit_h.image_encoder").parent)
    write_zoe_depth(_dest(dest, "zoe_depth.nyu").parent)
    write_rmbg(_dest(dest, "rmbg_1.4"))
    write_isnet_onnx(_dest(dest, "isnet_general_use"))
    write_esrgan(_dest(dest, "upscaler.4x_animesharp"))
    write_sd15(_dest(dest, "dreamshaper_8.model_index").parent)
