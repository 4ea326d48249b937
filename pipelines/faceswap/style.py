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


# §6.5 asks for a gain that removes a seam, not a relighting: the outer ring also holds hair and
# background, which would otherwise drag a face towards their brightness.
MAX_SEAM_GAIN = 1.25


def seam_luminance_gain(image: np.ndarray, mask: np.ndarray, width: int = 10) -> np.ndarray:
    """§6.5 normal: scale L inside the mask so the mean L of a ``width``-px ring inside the edge
    approaches that of the ring just outside (within ``MAX_SEAM_GAIN``); nothing else changes."""
    outside, inside = ring(mask, width)
    if not outside.any() or not inside.any():
        return image
    lab = _lab(image)
    gain = lab[..., 0][outside].mean() / max(lab[..., 0][inside].mean(), 1.0)
    gain = float(np.clip(gain, 1.0 / MAX_SEAM_GAIN, MAX_SEAM_GAIN))
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


def blur_sigma_for(image: np.ndarray, mask: np.ndarray, target_variance: float,
                   lowest: float = 0.3, highest: float = 8.0, steps: int = 8) -> float:
    """The Gaussian σ in [lowest, highest] whose blur brings the Laplacian variance in ``mask``
    down to ``target_variance``, found by bisection on log σ.

    The variance falls monotonically with σ, but how fast depends on the image's spectrum (about
    σ⁻⁶ for white grain, much slower for smooth shading), so it is measured rather than modelled;
    only the mask's bounding box, with the blur's reach around it, is blurred.
    """
    rows, cols = np.nonzero(mask > 0.5)
    reach = int(np.ceil(3 * highest)) + 1
    y0, y1 = max(rows.min() - reach, 0), rows.max() + reach + 1
    x0, x1 = max(cols.min() - reach, 0), cols.max() + reach + 1
    crop, crop_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    low, high = np.log(lowest), np.log(highest)
    for _ in range(steps):
        mid = (low + high) / 2
        if laplacian_variance(cv2.GaussianBlur(crop, (0, 0), float(np.exp(mid))), crop_mask) > target_variance:
            low = mid
        else:
            high = mid
    return float(np.exp((low + high) / 2))


def match_sharpness(image: np.ndarray, mask: np.ndarray, target_variance: float) -> np.ndarray:
    """Blur or unsharp-mask ``image`` so its Laplacian variance in ``mask`` approaches the target's."""
    current = laplacian_variance(image, mask)
    if current <= 0 or target_variance <= 0:
        return image
    ratio = target_variance / current
    if 0.8 <= ratio <= 1.25:
        return image
    if ratio < 1:
        return cv2.GaussianBlur(image, (0, 0), blur_sigma_for(image, mask, target_variance))
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
    """Grey grain over the whole image, enough to lift its ``noise_level`` in ``mask`` to the target's."""
    missing = target_level ** 2 - noise_level(image, mask) ** 2
    if missing <= 0:
        return image
    noise = rng.standard_normal(image.shape[:2]).astype(np.float32) * np.sqrt(missing)
    return np.clip(image.astype(np.float32) + noise[..., None], 0, 255).astype(np.uint8)


def is_grayscale(image: np.ndarray, tolerance: float = 2.0) -> bool:
    img = image.astype(np.float32)
    return float(np.abs(img - img.mean(axis=2, keepdims=True)).mean()) < tolerance


def apply_style(result: np.ndarray, region: np.ndarray, target: np.ndarray, skin: np.ndarray,
                style_type: str, face_size: float, rng: np.random.Generator) -> np.ndarray:
    """The colour step of §6.5 on the swapped ``region`` (soft mask) of ``result``.

    ``target`` is the original target image and ``skin`` the target face's skin mask. The swap
    keeps the target's pose, so ``skin`` covers the swapped skin in ``result`` too: every statistic
    (LAB mean/std, sharpness, grain) is measured there on both images, because hair and background
    in the region would bias it (§4.4), and each mapping is then applied to the whole region.
    """
    if style_type == "normal":
        return seam_luminance_gain(result, region)
    measured = skin > 0.5
    recoloured = transfer_lab_stats(result[..., ::-1], target[..., ::-1], measured, measured)[..., ::-1]
    # The lighting blur reaches past the region's edge, where the picture is the target's own:
    # compare with the recoloured region in place, not with a recoloured surround.
    styled = low_frequency_lighting(blend(result, recoloured, region), target, sigma=max(face_size / 8.0, 1.0))
    styled = match_sharpness(styled, skin, laplacian_variance(target, skin))
    styled = add_grain(styled, skin, noise_level(target, skin), rng)
    if is_grayscale(target):
        gray = cv2.cvtColor(styled, cv2.COLOR_RGB2GRAY)
        styled = np.repeat(gray[..., None], 3, axis=2)
    return blend(result, styled, region)
