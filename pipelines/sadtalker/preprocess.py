"""Source analysis: the five ``preprocess`` modes (spec §5.3) and the 3DMM source coefficients (§5.4).

image --RetinaFace + FAN--> 68 landmarks --FFHQ quad--> crop per mode --> S x S picture (the renderer's
source) --RetinaFace + FAN again--> POS alignment to 224 x 224 --> net_recon --> 73 coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..base import InputError
from ..common.fan_awing import FAN
from ..common.retinaface import RetinaFace, detect_faces
from .align import CropInfo, align_img, crop_face
from .coefficients import source_coefficients
from .landmarks import CROP_DETECTION_THRESHOLD, face_landmarks68, fan_landmarks98, landmarks_98_to_68
from .net_recon import ReconNet

PREPROCESS_MODES = ("crop", "extcrop", "resize", "full", "extfull")
# full/extfull paste the frames back into the original image and drive the 73-d MappingNet (§3.5, §5.9).
FULL_FRAME_MODES = ("full", "extfull")
NO_FACE = "No face detected in input_image"


def is_full_frame(preprocess: str) -> bool:
    return preprocess in FULL_FRAME_MODES


@dataclass
class SourceFace:
    """``picture``: the S x S uint8 RGB source crop; ``crop_info``: where it came from (§5.3 step 8);
    ``coeff``: the (73,) source coefficients exp | angle | trans | s, tx, ty (§5.4 step 5)."""

    picture: np.ndarray
    crop_info: CropInfo
    coeff: np.ndarray


def crop_source(detector: RetinaFace, fan: FAN, image_rgb: np.ndarray, preprocess: str,
                image_size: int) -> tuple[np.ndarray, CropInfo]:
    """The S x S source picture for ``preprocess`` and its CropInfo (§5.3).

    resize takes the whole image without detection; every other mode needs a face (§7). A quad so
    small that its integer box is empty counts as no face: there is nothing to render from.
    """
    if preprocess not in PREPROCESS_MODES:
        raise InputError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}")
    landmarks = None
    if preprocess != "resize":
        landmarks = face_landmarks68(detector, fan, image_rgb)
        if landmarks is None:
            raise InputError(NO_FACE)
    crop, info = crop_face(image_rgb, landmarks, preprocess)
    if crop.shape[0] == 0 or crop.shape[1] == 0 or min(info.size) <= 0:
        raise InputError(NO_FACE)
    # §5.3 step 9: bilinear to S x S, aspect not preserved.
    return cv2.resize(np.ascontiguousarray(crop), (image_size, image_size)), info


def picture_landmarks68(detector: RetinaFace, fan: FAN, picture_rgb: np.ndarray) -> np.ndarray | None:
    """(68, 2) landmarks of the first face on the S x S picture, or None (§5.4 step 1).

    Unlike the crop step, upstream hands RetinaFace a PIL image here, which it converts to BGR
    properly, so the detector sees true BGR.
    """
    faces = detect_faces(detector, picture_rgb, CROP_DETECTION_THRESHOLD)
    if not len(faces):
        return None
    x1, y1, x2, y2 = (max(int(v), 0) for v in faces.boxes[0])
    crop = picture_rgb[y1:y2, x1:x2]
    if crop.size == 0:
        return None
    points = landmarks_98_to_68(fan_landmarks98(fan, crop))
    return points + np.array([x1, y1], dtype=np.float32)


def standard_points_in_image(lm3d: np.ndarray, width: int, height: int) -> np.ndarray:
    """(5, 2) fallback landmarks: the standard 3-D points' x, y from [-1, 1] to the image, no y flip
    (upstream's intended no-face branch, §5.4 step 1)."""
    points = (lm3d[:, :2] + 1) / 2.0
    return np.concatenate([points[:, :1] * width, points[:, 1:2] * height], axis=1)


def alignment_landmarks(detector: RetinaFace, fan: FAN, picture_rgb: np.ndarray, lm3d: np.ndarray,
                        preprocess: str) -> np.ndarray:
    """Landmarks for the POS alignment, y pointing up (y' = H - 1 - y), §5.4 step 1.

    Without a face on the picture, crop/extcrop/full/extfull (a face was found in the crop step)
    use the standard points; resize had no detection yet, so it has no face at all (§7).
    """
    height, width = picture_rgb.shape[:2]
    landmarks = picture_landmarks68(detector, fan, picture_rgb)
    if landmarks is None:
        if preprocess == "resize":
            raise InputError(NO_FACE)
        return standard_points_in_image(lm3d, width, height)
    flipped = landmarks.astype(np.float64)
    flipped[:, 1] = height - 1 - flipped[:, 1]
    return flipped


@torch.no_grad()
def recon_coefficients(recon_net: ReconNet, aligned_rgb_u8: np.ndarray) -> np.ndarray:
    """(257,) net_recon output for the 224 x 224 aligned face, input RGB / 255 (§3.2, §5.4 step 5)."""
    weight = next(recon_net.parameters())
    # Upstream divides in float64 and then casts to float32.
    x = torch.from_numpy((aligned_rgb_u8.astype(np.float64) / 255.0).astype(np.float32).transpose(2, 0, 1))
    return recon_net(x[None].to(device=weight.device, dtype=weight.dtype))[0].float().cpu().numpy()


def analyse_source(detector: RetinaFace, fan: FAN, recon_net: ReconNet, lm3d: np.ndarray, image_rgb: np.ndarray,
                   preprocess: str, image_size: int) -> SourceFace:
    """Crop, align and reconstruct the source face (§5.3, §5.4)."""
    picture, info = crop_source(detector, fan, image_rgb, preprocess, image_size)
    landmarks = alignment_landmarks(detector, fan, picture, lm3d, preprocess)
    trans_params, aligned, _ = align_img(picture, landmarks, lm3d)
    coeff = source_coefficients(recon_coefficients(recon_net, aligned), trans_params)
    return SourceFace(picture=picture, crop_info=info, coeff=coeff)
