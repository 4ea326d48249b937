"""SDXL inpainting behind the ``Inpainter`` interface (faceswap.md §6.1, §6.4 step 9).

``model_type=speed`` runs the SDXL-Lightning 8-step LoRA on a trailing Euler schedule with CFG 1;
``quality`` runs the plain base for 30 steps of DPM++ 2M Karras at CFG 5 (§6.1). The LoRA is
loaded once as a named adapter and switched on or off per request, so both modes share one UNet.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LIGHTNING_ADAPTER = "lightning"


@dataclass(frozen=True)
class InpaintMode:
    steps: int
    guidance_scale: float
    lightning: bool


# §6.1: "8-step (speed) … CFG ≈1.0–1.5"; "30-step (quality) … DPM++ 2M Karras, CFG ≈5".
MODES = {
    "speed": InpaintMode(steps=8, guidance_scale=1.0, lightning=True),
    "quality": InpaintMode(steps=30, guidance_scale=5.0, lightning=False),
}


def working_size(height: int, width: int, base: int) -> tuple[int, int]:
    """Resize (h, w) so the longer side is ``base`` (the UNet's native size), multiples of 8."""
    scale = base / max(height, width)
    return max(8, int(round(height * scale / 8)) * 8), max(8, int(round(width * scale / 8)) * 8)


class SDXLInpainter:
    """diffusers ``StableDiffusionXLInpaintPipeline`` with an optional Lightning LoRA."""

    def __init__(self, pipe, has_lightning: bool):
        self.pipe = pipe
        self.has_lightning = has_lightning
        self.native_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self._base_scheduler_config = dict(pipe.scheduler.config)

    @classmethod
    def load(cls, model_dir: Path, lightning_lora: Path | None, device: str = "cpu",
             dtype: torch.dtype = torch.float32) -> "SDXLInpainter":
        from diffusers import StableDiffusionXLInpaintPipeline

        # The manifest installs the fp16 variant files of SDXL base (weights/manifest.toml);
        # diffusers upcasts them when a float32 pipeline is asked for.
        variant = "fp16" if any(Path(model_dir).glob("unet/*.fp16.safetensors")) else None
        pipe = StableDiffusionXLInpaintPipeline.from_pretrained(
            str(model_dir), dtype=dtype, local_files_only=True, variant=variant
        )
        if lightning_lora is not None:
            pipe.load_lora_weights(str(lightning_lora), adapter_name=LIGHTNING_ADAPTER)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device), has_lightning=lightning_lora is not None)

    def _configure(self, mode: InpaintMode) -> None:
        from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

        if mode.lightning:
            # SDXL-Lightning is distilled for a trailing-spaced Euler schedule (§6.1).
            self.pipe.scheduler = EulerDiscreteScheduler.from_config(
                self._base_scheduler_config, timestep_spacing="trailing"
            )
        else:
            self.pipe.scheduler = DPMSolverMultistepScheduler.from_config(
                self._base_scheduler_config, algorithm_type="dpmsolver++", use_karras_sigmas=True
            )
        if self.has_lightning:
            if mode.lightning:
                self.pipe.enable_lora()
                self.pipe.set_adapters([LIGHTNING_ADAPTER], adapter_weights=[1.0])
            else:
                self.pipe.disable_lora()

    @torch.inference_mode()
    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str,
                model_type: str, strength: float, generator: torch.Generator) -> np.ndarray:
        """Regenerate ``image`` (uint8 HWC RGB) where ``mask`` (HxW in [0, 1]) is set.

        Works at the UNet's native resolution (aspect kept) and returns the result at the
        input's size; pixels outside the mask are the caller's to blend back.
        """
        mode = MODES[model_type]
        self._configure(mode)
        h, w = image.shape[:2]
        wh, ww = working_size(h, w, self.native_size)
        src = Image.fromarray(image).resize((ww, wh), Image.LANCZOS)
        msk = Image.fromarray(np.clip(mask * 255.0, 0, 255).astype(np.uint8)).resize((ww, wh), Image.BILINEAR)
        # diffusers runs int(steps * strength) of the scheduled steps; "model_type sets the
        # scheduled step count" is the contract (§6.3 step 7).
        out = self.pipe(
            prompt=prompt,
            negative_prompt=negative_prompt if mode.guidance_scale > 1 else None,
            image=src,
            mask_image=msk,
            height=wh,
            width=ww,
            strength=float(strength),
            num_inference_steps=mode.steps,
            guidance_scale=mode.guidance_scale,
            generator=generator,
            output_type="np",
        ).images[0]
        result = (np.clip(out, 0, 1) * 255.0 + 0.5).astype(np.uint8)
        return np.asarray(Image.fromarray(result).resize((w, h), Image.LANCZOS))
