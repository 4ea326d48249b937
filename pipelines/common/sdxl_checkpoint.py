"""Single-file SDXL checkpoints (AlbedoBase XL, DreamShaper XL Lightning) loaded offline.

Civitai-style checkpoints hold the UNet, the baked VAE and both text encoders in the original
(ldm) key layout; diffusers converts them against a local copy of the SDXL base configs and
tokenizers (``sdxl.base.*`` in weights/manifest.toml), so nothing is fetched (§2.3). A LoRA is
fused into the weights once at load time (StickersRedmond at 1.0 on UNet and text encoders,
§2.2 step 2), so requests pay nothing for it.
"""
from __future__ import annotations

from pathlib import Path

import torch

FUSED_ADAPTER = "fused"


def load_single_file(checkpoint: Path, config_dir: Path, dtype: torch.dtype = torch.float32):
    """``StableDiffusionXLPipeline`` of ``checkpoint``, configured from ``config_dir``."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_single_file(
        str(checkpoint), config=str(config_dir), local_files_only=True, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fuse_lora(pipe, lora: Path, scale: float = 1.0) -> None:
    """Merge a kohya/diffusers LoRA file into ``pipe``'s weights at ``scale`` (needs peft)."""
    lora = Path(lora)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name=FUSED_ADAPTER)
    pipe.fuse_lora(lora_scale=scale, adapter_names=[FUSED_ADAPTER])
    pipe.unload_lora_weights()
