"""The swap steps of faceswap-v4 as functions of their components (faceswap.md §6.2–§6.4).

Images are RGB uint8 here; the InsightFace tools take BGR, converted at their call.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pipelines.common.alignment import estimate_similarity, transform_points
from pipelines.common.face_restore import FFHQ_512, FaceEnhancer, align_ffhq, ffhq_affine
from pipelines.common.face_types import Face
from pipelines.common.inpainter import SDXLInpainter
from pipelines.common.inswapper import INSwapper, align_for_swap
from pipelines.common.parsenet import ParseNet, parse_faces
from pipelines.common.paste_back import feather_mask, feathered_box_mask, paste_back

from . import masks
from .style import blend

# Faces smaller than this skip diffusion and get a face-only swap (§6.8 "tiny faces").
MIN_DIFFUSION_FACE = 48
# Head parsing uses a zoomed-out FFHQ crop so hair and ears fit (§6.4 step 5: generous crops).
HEAD_ZOOM = 0.6
HEAD_PROMPT = "photo of a person, natural hair, realistic skin, consistent lighting"
HEAD_NEGATIVE = "deformed, extra ears, bald patch, text, watermark"


@dataclass
class StyleSettings:
    """The numbers §6.5 ties to ``style_type``."""

    restore_blend: float
    refine_strength: float
    hair_strength: float
    relock_blend: float


STYLE_SETTINGS = {
    "normal": StyleSettings(restore_blend=0.8, refine_strength=0.25, hair_strength=0.45, relock_blend=0.6),
    "style": StyleSettings(restore_blend=0.6, refine_strength=0.4, hair_strength=0.6, relock_blend=0.5),
}
# §6.1: pixel boost 256 for speed, 512 for quality.
BOOST_SIZE = {"speed": 256, "quality": 512}


def head_affine(kps: np.ndarray) -> np.ndarray:
    """Image -> 512 crop on the FFHQ template zoomed out by HEAD_ZOOM around the crop centre."""
    template = (FFHQ_512 - 256.0) * HEAD_ZOOM + 256.0
    m, _ = cv2.estimateAffinePartial2D(np.asarray(kps, np.float32), template, method=cv2.LMEDS)
    return m


def parse_in_frame(parser: ParseNet, image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Class map of the whole frame, as seen through the 512 crop ``m`` (0 = background outside it)."""
    crop = align_ffhq(image, m)
    parsing = parse_faces(parser, crop[None])[0]
    h, w = image.shape[:2]
    return cv2.warpAffine(parsing, cv2.invertAffineTransform(m), (w, h), flags=cv2.INTER_NEAREST,
                          borderValue=0)


def parse_face(parser: ParseNet, image: np.ndarray, face: Face) -> np.ndarray:
    """Frame-space class map of ``face`` from its FFHQ-aligned 512 crop (§6.3 step 5)."""
    return parse_in_frame(parser, image, ffhq_affine(face.kps))


def swap_identity(swapper: INSwapper, image: np.ndarray, face: Face, latent: np.ndarray, size: int,
                  inner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-boost swap of ``face`` pasted with box ∧ ``inner`` (the frame-space inner-face mask),
    feathered (§6.3 steps 4–5).

    Returns the new image and the frame-space soft mask that was pasted.
    """
    bgr = np.ascontiguousarray(image[..., ::-1])
    crop, m = align_for_swap(bgr, face.kps, size)
    swapped = swapper.swap_aligned(crop, latent)
    h, w = image.shape[:2]
    inner_crop = cv2.warpAffine(inner, m, (size, size), flags=cv2.INTER_LINEAR)
    crop_mask = np.minimum(feathered_box_mask(size, 0.3), feather_mask(inner_crop, size / 64.0))
    result = paste_back(bgr, swapped, m, crop_mask)[..., ::-1]
    frame_mask = cv2.warpAffine(crop_mask, cv2.invertAffineTransform(m), (w, h))
    return np.ascontiguousarray(result), frame_mask


def restore(enhancer: FaceEnhancer, image: np.ndarray, face: Face, blend_weight: float,
            generator: torch.Generator) -> np.ndarray:
    """GFPGAN on the FFHQ 512 crop, blended in at ``blend_weight`` (§6.3 step 6)."""
    return enhancer.enhance([image], [[face.kps]], generator, upscale=1, blend=blend_weight)[0]


def face_size(face: Face) -> float:
    x1, y1, x2, y2 = face.bbox
    return float(max(x2 - x1, y2 - y1))


def square_around(face: Face, scale: float, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) of ``scale`` × the face box around its centre, clipped to the image."""
    x1, y1, x2, y2 = face.bbox
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, face_size(face) * scale / 2
    return (max(int(cx - half), 0), max(int(cy - half), 0), min(int(cx + half), hw[1]), min(int(cy + half), hw[0]))


def inpaint_region(inpainter: SDXLInpainter, image: np.ndarray, mask: np.ndarray, box, prompt: str,
                   negative: str, model_type: str, strength: float, generator: torch.Generator) -> np.ndarray:
    """SDXL inpainting of ``mask`` inside the crop ``box``, blended back through the soft mask."""
    x0, y0, x1, y1 = box
    crop, crop_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    if crop_mask.max() <= 0:
        return image
    painted = inpainter.inpaint(crop, crop_mask, prompt, negative, model_type, strength, generator)
    out = image.copy()
    out[y0:y1, x0:x1] = blend(crop, painted, feather_mask(crop_mask > 0.5, 2.0))
    return out


def refine_face(inpainter: SDXLInpainter, image: np.ndarray, face: Face, inner: np.ndarray,
                model_type: str, strength: float, generator: torch.Generator) -> np.ndarray:
    """Light diffusion detail pass over the face, mask dilated 8 % (§6.3 step 7)."""
    grow = max(1, int(0.08 * face_size(face)))
    region = feather_mask(masks.dilate(inner, grow) > 0.5, grow / 2)
    box = square_around(face, 2.0, image.shape[:2])
    return inpaint_region(inpainter, image, region, box, "photo of a face, realistic skin, detailed",
                          HEAD_NEGATIVE, model_type, strength, generator)


def relock(swapper: INSwapper, image: np.ndarray, face: Face, latent: np.ndarray, size: int,
           inner: np.ndarray, weight: float) -> np.ndarray:
    """Second identity pass on the finished image, blended at ``weight`` in the inner face (§6.3 step 8)."""
    swapped, mask = swap_identity(swapper, image, face, latent, size, inner)
    return blend(image, swapped, mask * weight)


def warp_source_head(parser: ParseNet, source: np.ndarray, source_face: Face, target_shape,
                     target_face: Face) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source image, head mask and inner-face mask warped onto the target canvas by the keypoint
    similarity (§6.4 step 6), with an extra scale when the face boxes disagree."""
    m = estimate_similarity(source_face.kps.astype(np.float64), target_face.kps.astype(np.float64))
    box_ratio = face_size(target_face) / max(face_size(source_face) * np.sqrt(abs(np.linalg.det(m[:, :2]))), 1e-6)
    if abs(box_ratio - 1.0) > 0.15:
        centre = transform_points(source_face.kps.mean(axis=0, keepdims=True), m)[0]
        m = np.vstack([m, [0, 0, 1]])
        zoom = np.array([[box_ratio, 0, (1 - box_ratio) * centre[0]], [0, box_ratio, (1 - box_ratio) * centre[1]], [0, 0, 1]])
        m = (zoom @ m)[:2]
    h, w = target_shape[:2]
    parsing = parse_in_frame(parser, source, head_affine(source_face.kps))
    warped = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    warped_parsing = cv2.warpAffine(parsing, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    return warped, masks.class_mask(warped_parsing, masks.HEAD), masks.class_mask(warped_parsing, masks.INNER_CORE)


def compose_head(swapped: np.ndarray, source_warped: np.ndarray, source_head: np.ndarray,
                 source_inner: np.ndarray, feather_px: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """``C``: the swapped target with the source's hair, ears and hat pasted over it, its inner face
    kept (§6.4 step 7). Returns C and the pasted (soft) mask."""
    # The paste is pulled back from the inner face by the feather's reach (3σ), so the whole
    # transition falls on the hair side and T1's inner face stays exactly as swapped; the band it
    # leaves shows T1's skin, and the inpainter regenerates it beyond the core's margin
    # (head_inpaint_mask).
    reach = int(np.ceil(3 * feather_px))
    outer = np.clip(source_head - masks.dilate(source_inner, 2 + reach), 0, 1)
    soft = feather_mask(outer > 0.5, feather_px)
    return blend(swapped, source_warped, soft), soft


def head_inpaint_mask(target_head: np.ndarray, source_head: np.ndarray, inner_core: np.ndarray,
                      face: Face) -> np.ndarray:
    """``Mi`` = dilate((target head ∪ warped source head) − inner core) ∪ neck seam band (§6.4 step 8)."""
    size = face_size(face)
    union = np.maximum(target_head, source_head)
    grow = max(2, int(0.04 * size))
    outer = np.clip(masks.dilate(union, grow) - masks.dilate(inner_core, grow), 0, 1)
    seam = masks.band_below(union, max(2, int(0.12 * size)))
    return np.clip(np.maximum(outer, seam) - inner_core, 0, 1)
