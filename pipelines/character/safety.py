"""The Stable Diffusion safety checker on every output (sticker-and-character.md §3.1, §3.2):
Segmind exposes no switch, so it stays on; an NSFW image is dropped from the result."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class SafetyChecker:
    """CompVis/stable-diffusion-safety-checker with its CLIP preprocessing."""

    def __init__(self, model, processor, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "cpu") -> "SafetyChecker":
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessorPil

        # The PIL processor: the default one needs torchvision, which the project does not install.
        model = StableDiffusionSafetyChecker.from_pretrained(str(folder), local_files_only=True)
        return cls(model, CLIPImageProcessorPil.from_pretrained(str(folder), local_files_only=True), device)

    @torch.no_grad()
    def nsfw(self, images: list[np.ndarray]) -> list[bool]:
        """Whether each uint8 HWC RGB image shows an NSFW concept."""
        pixels = self.processor(images=images, return_tensors="pt").pixel_values
        pixels = pixels.to(device=self.device, dtype=self.model.dtype)
        _, flags = self.model(clip_input=pixels, images=[image.copy() for image in images])
        return [bool(flag) for flag in flags]
