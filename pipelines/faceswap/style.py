"""``style_type``: what happens to the colours and texture of the swapped region (faceswap.md §6.5).

``normal`` keeps the source's look and only removes a visible seam with a luminance gain;
``style`` moves colour, low-frequency lighting, sharpness and grain toward the target.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipelines.common.color_transfer import transfer_lab_stats


def _lab(img_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)


def _rgb(lab: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def blend(base: np.ndarray, top: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float32)[..., None]
    return np.clip(m * top.astype(np.float32) + (1 - m) * base.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)


def ring(mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean bands ``width`` px just outside and just inside the mask's edge."""
    hard = (mask > 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    outside = cv2.dilate(hard, kernel).astype(bool) & ~hard.astype(bool)
    inside = hard.astype(bool) & ~cv2.erode(hard, kernel).astype(bool)
    return outside, inside


def seam_luminance_gain(image: np.ndarray, mask: np.ndarray, width: int = 10) -> np.ndarray:
    """§6.5 normal: scale L inside the mask so the mean L of a ``width``-px ring inside the edge
    equals that of the ring just outside; nothing else changes."""
    outside, inside = ring(mask, width)
    if not outside.any() or not inside.any():
        return image
    lab = _lab(image)
    gain = lab[..., 0][outside].mean() / max(lab[..., 0][inside].mean(), 1.0)
    adjusted = lab.copy()
    adjusted[..., 0] *= gain
    return blend(image, _rgb(adjusted), mask)


def low_frequency_lighting(image: np.ndarray, reference: np.ndarray, sigma: float) -> np.ndarray:
    """Replace the image's low-frequency luminance with the reference's (σ ≈ face size / 8, §6.5)."""
    lab, ref = _lab(image), _lab(reference)
    k = (0, 0)
    lab[..., 0] += cv2.GaussianBlur(ref[..., 0], k, sigma) - cv2.GaussianBlur(lab[..., 0], k, sigma)
    return _rgb(lab)


def laplacian_variance(image: np.ndarray, mask: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    sel = mask > 0.5
    return float(lap[sel].var()) if sel.any() else 0.0


def match_sharpness(image: np.ndarray, mask: np.ndarray, target_variance: float) -> np.ndarray:
    """Blur or unsharp-mask ``image`` so its Laplacian variance in ``mask`` approaches the target's."""
    current = laplacian_variance(image, mask)
    if current <= 0 or target_variance <= 0:
        return image
    ratio = target_variance / current
    if 0.8 <= ratio <= 1.25:
        return image
    if ratio < 1:
        # A Gaussian of σ scales Laplacian energy down roughly like 1/(1 + 2σ²) for fine texture.
        sigma = float(np.sqrt(max(1.0 / ratio - 1.0, 0.0) / 2.0))
        return cv2.GaussianBlur(image, (0, 0), max(sigma, 0.3))
    amount = min(float(np.sqrt(ratio)) - 1.0, 2.0)
    soft = cv2.GaussianBlur(image, (0, 0), 1.0).astype(np.float32)
    return np.clip(image.astype(np.float32) * (1 + amount) - soft * amount, 0, 255).astype(np.uint8)


def noise_level(image: np.ndarray, mask: np.ndarray) -> float:
    """Robust std of the fine residual (image − 3×3 median) inside the mask: the grain to match."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    residual = gray - cv2.medianBlur(gray.astype(np.uint8), 3).astype(np.float32)
    sel = mask > 0.5
    if not sel.any():
        return 0.0
    r = residual[sel]
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def add_grain(image: np.ndarray, mask: np.ndarray, target_level: float, rng: np.random.Generator) -> np.ndarray:
    missing = target_level ** 2 - noise_level(image, mask) ** 2
    if missing <= 0:
        return image
    noise = rng.standard_normal(image.shape[:2]).astype(np.float32) * np.sqrt(missing)
    grained = np.clip(image.astype(np.float32) + noise[..., None], 0, 255).astype(np.uint8)
    return blend(image, grained, mask)


def is_grayscale(image: np.ndarray, tolerance: float = 2.0) -> bool:
    img = image.astype(np.float32)
    return float(np.abs(img - img.mean(axis=2, keepdims=True)).mean()) < tolerance


def apply_style(result: np.ndarray, region: np.ndarray, target: np.ndarray, target_region: np.ndarray,
                style_type: str, face_size: float, rng: np.random.Generator) -> np.ndarray:
    """The colour step of §6.5 on the swapped ``region`` (soft mask) of ``result``.

    ``target`` is the original target image and ``target_region`` its face/skin mask before the swap.
    """
    if style_type == "normal":
        return seam_luminance_gain(result, region)
    styled = transfer_lab_stats(result[..., ::-1], target[..., ::-1], region > 0.5, target_region > 0.5)[..., ::-1]
    styled = low_frequency_lighting(styled, target, sigma=max(face_size / 8.0, 1.0))
    styled = match_sharpness(styled, region, laplacian_variance(target, target_region))
    styled = add_grain(styled, region, noise_level(target, target_region), rng)
    if is_grayscale(target):
        gray = cv2.cvtColor(styled, cv2.COLOR_RGB2GRAY)
        styled = np.repeat(gray[..., None], 3, axis=2)
    return blend(result, styled, region)
