"""``upscale=true``: UltimateSDUpscale as the workflow configures it (sticker-and-character.md §2.2
step 9, §2.3): 4x-AnimeSharp, Lanczos down to 2x, then SD1.5 (DreamShaper 8) img2img over a
uniform grid of 512² tiles, each processed with 16 px of context on every side (544²), 10 steps
of Euler at denoise 0.2 (a 50-step schedule, last 10), CFG 8, its own fixed prompts, and pasted
back through the tile's mask blurred by 8 px. No seam fix.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from pipelines.common.checkpoint import load_strict, read_state_file
from pipelines.common.sigma_gate import img2img_steps

from .rrdbnet import RRDBNet, basicsr_state, rrdbnet_config

UPSCALE_BY = 2
TILE = 512
TILE_CONTEXT = 16  # (544 − 512) / 2: force_uniform_tiles with padding 32
MASK_BLUR = 8
DENOISE = 0.2
CFG = 8.0
TILE_PROMPT = "svg, vector art, sharp"
TILE_NEGATIVE = "nsfw, photo, photography, watermark"


# BasicSR / traiNNer training checkpoints wrap the weights; the EMA copy is the published one.
TRAINING_WRAPPERS = ("params_ema", "params")


def unwrapped_state(state: dict) -> dict:
    for key in TRAINING_WRAPPERS:
        if key in state:
            return state[key]
    return state


def load_esrgan(path: Path, device: str = "cpu") -> RRDBNet:
    state = basicsr_state(unwrapped_state(read_state_file(path)))
    net = RRDBNet(**rrdbnet_config(state))
    return load_strict(net, state, str(path)).to(device).eval()


@torch.no_grad()
def esrgan_upscale(net: RRDBNet, image: np.ndarray) -> np.ndarray:
    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None].to(device) / 255.0
    y = net(x).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return (y * 255.0).round().astype(np.uint8)


def tile_grid(width: int, height: int, tile: int = TILE) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each tile, row by row."""
    return [(x, y, min(x + tile, width), min(y + tile, height))
            for y in range(0, height, tile) for x in range(0, width, tile)]


def context_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The tile grown by the context on every side, shifted (not shrunk) to stay inside the image."""
    side_w = min(box[2] - box[0] + 2 * TILE_CONTEXT, width)
    side_h = min(box[3] - box[1] + 2 * TILE_CONTEXT, height)
    x0 = min(max(box[0] - TILE_CONTEXT, 0), width - side_w)
    y0 = min(max(box[1] - TILE_CONTEXT, 0), height - side_h)
    return x0, y0, x0 + side_w, y0 + side_h


def tile_mask(box: tuple[int, int, int, int], width: int, height: int) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask.filter(ImageFilter.GaussianBlur(MASK_BLUR))


class TiledUpscaler:
    def __init__(self, esrgan: RRDBNet, img2img):
        self.esrgan = esrgan
        self.img2img = img2img

    @classmethod
    def load(cls, esrgan_file: Path, sd15_folder: Path, device: str = "cpu",
             dtype: torch.dtype = torch.float32) -> "TiledUpscaler":
        from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

        pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
            str(sd15_folder), dtype=dtype, local_files_only=True, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        # ComfyUI's euler + normal schedule (§4.3).
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
        pipe.set_progress_bar_config(disable=True)
        return cls(load_esrgan(esrgan_file, device), pipe.to(device))

    def upscale(self, image: np.ndarray, steps: int, seed: int) -> np.ndarray:
        """uint8 HWC RGB → the 2x image."""
        height, width = image.shape[:2]
        big = Image.fromarray(esrgan_upscale(self.esrgan, image))
        result = big.resize((width * UPSCALE_BY, height * UPSCALE_BY), Image.LANCZOS)
        total, strength = img2img_steps(steps, DENOISE)
        for box in tile_grid(*result.size):
            crop_box = context_box(box, *result.size)
            crop = result.crop(crop_box)
            generator = torch.Generator().manual_seed(seed)
            out = self.img2img(prompt=TILE_PROMPT, negative_prompt=TILE_NEGATIVE, image=crop, strength=strength,
                               num_inference_steps=total, guidance_scale=CFG, generator=generator,
                               output_type="pil").images[0]
            if out.size != crop.size:
                out = out.resize(crop.size, Image.LANCZOS)
            processed = result.copy()
            processed.paste(out, crop_box[:2])
            result = Image.composite(processed, result, tile_mask(box, *result.size))
        return np.asarray(result)

