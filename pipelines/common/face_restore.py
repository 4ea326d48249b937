"""Face restoration in place: FFHQ-512 alignment, GFPGAN, ParseNet mask, paste-back.

This is what GFPGANer + FaceRestoreHelper do for SadTalker's enhancer (sadtalker.md §5.10),
written as small functions; faceswap reuses it with a partial blend (faceswap.md §6.3 step 6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from .gfpgan import GFPGANv1Clean, restore_face
from .parsenet import ParseNet, parse_faces

# FFHQ 512 five-point template (sadtalker.md §5.10 step 3.2), image order as SCRFD/RetinaFace give.
FFHQ_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]],
    dtype=np.float32,
)
# Upstream pads with BGR (135, 133, 132); our images are RGB.
BORDER_RGB = (132, 133, 135)
# ParseNet classes that belong to the restored face: 1..13 and 15 (§5.10 step 5.3); background,
# neck, cloth, hair and hat keep the original pixels.
FACE_CLASSES = np.array([c in (*range(1, 14), 15) for c in range(19)])


def ffhq_affine(kps: np.ndarray) -> np.ndarray:
    """Image -> 512 crop similarity, estimated robustly (LMEDS) as upstream does (§5.10 step 3.2)."""
    m, _ = cv2.estimateAffinePartial2D(np.asarray(kps, np.float32), FFHQ_512, method=cv2.LMEDS)
    return m


def align_ffhq(img_rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(img_rgb, m, (512, 512), borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB)


def paste_affine(m: np.ndarray, upscale: int) -> np.ndarray:
    """Crop -> (upscaled) image: the inverse similarity scaled by ``upscale``; upstream adds
    0.5 px per upscale step to the translation when it enlarges (§5.10 step 5.1)."""
    inv = cv2.invertAffineTransform(m) * upscale
    if upscale > 1:
        inv[:, 2] += 0.5 * upscale
    return inv


def soft_face_mask(parsing: np.ndarray) -> np.ndarray:
    """512x512 class map -> soft mask in [0, 1]: face classes, two 101x101 σ=11 Gaussian blurs,
    a zeroed 10 px frame (§5.10 step 5.4)."""
    mask = np.where(FACE_CLASSES[parsing], 255.0, 0.0)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask[:10, :] = 0
    mask[-10:, :] = 0
    mask[:, :10] = 0
    mask[:, -10:] = 0
    return mask / 255.0


def paste_face(background: np.ndarray, face: np.ndarray, mask: np.ndarray, inv: np.ndarray,
               blend: float = 1.0) -> np.ndarray:
    """Blend one restored face into ``background`` (float32 HWC) through ``inv`` with its mask."""
    h, w = background.shape[:2]
    warped = cv2.warpAffine(face, inv, (w, h)).astype(np.float32)
    # INTER_AREA for the mask, as upstream warps it with flags=3 (§5.10 step 5.5).
    m = cv2.warpAffine(mask.astype(np.float32), inv, (w, h), flags=cv2.INTER_AREA)[..., None] * blend
    return m * warped + (1.0 - m) * background


@dataclass
class FaceEnhancer:
    """GFPGAN restoration of given faces, pasted back through a ParseNet mask."""

    gfpgan: GFPGANv1Clean
    parser: ParseNet
    batch_size: int = 8

    def restore_aligned(self, crops: np.ndarray, generator: torch.Generator | None) -> np.ndarray:
        out = [restore_face(self.gfpgan, crops[i:i + self.batch_size], generator)
               for i in range(0, len(crops), self.batch_size)]
        return np.concatenate(out) if out else crops

    def masks(self, restored: np.ndarray) -> list[np.ndarray]:
        parsing = np.concatenate([parse_faces(self.parser, restored[i:i + self.batch_size])
                                  for i in range(0, len(restored), self.batch_size)])
        return [soft_face_mask(p) for p in parsing]

    def enhance(self, frames: Sequence[np.ndarray], kps: Sequence[Sequence[np.ndarray]],
                generator: torch.Generator | None, upscale: int = 1, blend: float = 1.0) -> list[np.ndarray]:
        """Restore every face (5-point ``kps`` per face, per frame) of every frame, batched.

        ``upscale`` enlarges the background with Lanczos first (SadTalker's enhancer uses 2);
        ``blend`` < 1 keeps part of the original face (faceswap's restore step).
        """
        jobs = [(i, ffhq_affine(k)) for i, frame_kps in enumerate(kps) for k in frame_kps]
        crops = np.stack([align_ffhq(frames[i], m) for i, m in jobs]) if jobs else np.zeros((0, 512, 512, 3), np.uint8)
        restored = self.restore_aligned(crops, generator)
        masks = self.masks(restored) if jobs else []
        out = []
        for i, frame in enumerate(frames):
            h, w = frame.shape[:2]
            bg = frame if upscale == 1 else cv2.resize(frame, (w * upscale, h * upscale), interpolation=cv2.INTER_LANCZOS4)
            canvas = bg.astype(np.float32)
            for j, (frame_index, m) in enumerate(jobs):
                if frame_index == i:
                    canvas = paste_face(canvas, restored[j], masks[j], paste_affine(m, upscale), blend)
            # Upstream casts the blend to uint8 (truncation), §5.10 step 5.6.
            out.append(np.clip(canvas, 0, 255).astype(np.uint8))
        return out
