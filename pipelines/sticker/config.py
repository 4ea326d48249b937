"""The fofr face-to-sticker workflow's fixed settings (sticker-and-character.md §2.2)."""
from __future__ import annotations

from pipelines.common.sigma_gate import SigmaGate

# predict.py's templates; the negative has no comma before the user's text (§2.2).
POSITIVE_TEMPLATE = "Sticker, {prompt}, cel shaded, svg, vector art, sharp"
NEGATIVE_TEMPLATE = "photo, photography, nsfw, nude, ugly, broken, watermark, oversaturated, soft {negative_prompt}"

LORA_SCALE = 1.0  # LoRA Stacker: StickersRedmond at 1.0 on model and clip
DEPTH_STRENGTH = 0.2  # Control Net Stacker (28)
DEPTH_GATE = SigmaGate(0.0, 0.7)
PLUS_FACE_GATE = SigmaGate(0.0, 0.2)  # IPAdapterApplyFaceID (43): start 0, end 0.2
DEPTH_RESOLUTION = 1024  # AIO_Preprocessor resolution


def positive_prompt(prompt: str) -> str:
    return POSITIVE_TEMPLATE.format(prompt=prompt)


def negative_prompt(negative: str) -> str:
    return NEGATIVE_TEMPLATE.format(negative_prompt=negative)


def latent_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) rounded down to the VAE's 8-pixel grid, as ComfyUI's EmptyLatentImage does."""
    return width // 8 * 8, height // 8 * 8
