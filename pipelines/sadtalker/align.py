"""Face crop and 3DMM alignment geometry (spec §5.3, §5.4).

* ``align_face``: the FFHQ-style quad around the 68 landmarks and its axis-aligned boxes
  (upstream ``Preprocesser.align_face``, always with output_size 512), and ``crop_face`` which
  cuts the renderer's source crop per ``preprocess`` mode from them.
* ``load_lm3d`` / ``five_points`` / ``pos`` / ``align_img``: the 5-point similarity (POS) that
  maps the S x S crop to the 224 x 224 input of the 3DMM network, and its ``trans_params``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image
from scipy.io import loadmat

# Upstream calls align_face with xsize=512 whatever the image_size (spec §5.3 step 4).
CROP_OUTPUT_SIZE = 512
LM3D_FILE = "similarity_Lm3D_all.mat"
ALIGNED_SIZE = 224
# Deep3DFaceRecon's target scale of the POS similarity (spec §5.4 step 3).
RESCALE_FACTOR = 102.0


class FaceQuad(NamedTuple):
    """``rsize``: (w, h) after the shrink; ``crop``: (left, top, right, bottom) with border,
    clamped to the image; ``quad``: tight (lx, ly, rx, ry) box of the quad inside ``crop``."""

    rsize: tuple[int, int]
    crop: tuple[int, int, int, int]
    quad: tuple[float, float, float, float]


def align_face(width: int, height: int, lm: np.ndarray, output_size: int = CROP_OUTPUT_SIZE) -> FaceQuad:
    """Crop geometry of a (width x height) image from its 68 landmarks (x, y pixels), spec §5.3 steps 3-6."""
    eye_left = np.mean(lm[36:42], axis=0)
    eye_right = np.mean(lm[42:48], axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    # Oriented square: x along the eyes, tilted by the eye-mouth axis, sized by the larger of both.
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    qsize = np.hypot(*x) * 2

    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(width) / shrink)), int(np.rint(float(height) / shrink)))
        quad /= shrink
        qsize /= shrink
    else:
        rsize = (int(np.rint(float(width))), int(np.rint(float(height))))
    # The bounds below are measured on the shrunk image.
    width, height = rsize

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
            int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, width), min(crop[3] + border, height))
    if crop[2] - crop[0] < width or crop[3] - crop[1] < height:
        quad -= crop[0:2]

    q = (quad + 0.5).flatten()
    lx = max(min(q[0], q[2]), 0)
    ly = max(min(q[1], q[7]), 0)
    rx = min(max(q[4], q[6]), width)
    # Upstream clamps the bottom edge to the image WIDTH (spec §5.3 step 6); kept for parity.
    ry = min(max(q[3], q[5]), width)
    return FaceQuad(rsize, crop, (float(lx), float(ly), float(rx), float(ry)))


@dataclass(frozen=True)
class CropInfo:
    """Where the renderer's source crop came from (upstream ``crop_info``, spec §5.3 step 8).

    ``size``: (w, h) of the tight face box, the aspect of the output frames (§5.7 step 3);
    ``paste_box``: (x1, y1, x2, y2) in ORIGINAL image pixels where full/extfull paste the frames
    (the tight box, or the bordered crop for extfull), mapped back through the shrink that
    upstream forgets to undo (spec §5.9 step 5).
    """

    size: tuple[int, int]
    paste_box: tuple[int, int, int, int]


def crop_face(image_rgb: np.ndarray, lm: np.ndarray | None, preprocess: str) -> tuple[np.ndarray, CropInfo]:
    """The source crop for ``preprocess`` (crop|extcrop|full|extfull|resize) and its CropInfo.

    crop/full take the tight quad box, extcrop/extfull the bordered crop, resize the whole image
    (no landmarks needed). The box is axis-aligned and not necessarily square (spec §5.3 step 7).
    """
    height, width = image_rgb.shape[:2]
    if preprocess == "resize":
        return image_rgb, CropInfo((width, height), (0, 0, width, height))
    geometry = align_face(width, height, lm)
    clx, cly, crx, cry = geometry.crop
    lx, ly, rx, ry = (int(v) for v in geometry.quad)
    resized = cv2.resize(image_rgb, geometry.rsize)
    bordered = resized[cly:cry, clx:crx]
    extended = preprocess.startswith("ext")
    crop = bordered if extended else bordered[ly:ry, lx:rx]
    box = (clx, cly, crx, cry) if extended else (clx + lx, cly + ly, clx + rx, cly + ry)
    sx, sy = width / geometry.rsize[0], height / geometry.rsize[1]
    paste_box = (int(round(box[0] * sx)), int(round(box[1] * sy)), int(round(box[2] * sx)), int(round(box[3] * sy)))
    return crop, CropInfo((rx - lx, ry - ly), paste_box)


def five_points(lm: np.ndarray) -> np.ndarray:
    """(5, k) eye centres (36/39, 42/45 means), nose tip (30), mouth corners (48, 54): the reduction
    applied both to detected 68-point landmarks and to the 68 mean 3-D landmarks (spec §5.4 step 2)."""
    return np.stack([np.mean(lm[[36, 39]], 0), np.mean(lm[[42, 45]], 0), lm[30], lm[48], lm[54]], axis=0)


def load_lm3d(bfm_dir: Path) -> np.ndarray:
    """(5, 3) standard 3-D points from ``similarity_Lm3D_all.mat`` (its ``lm``: 68 x 3 mean landmarks)."""
    return five_points(loadmat(str(Path(bfm_dir) / LM3D_FILE))["lm"])


def pos(xp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine camera ``[R1 t1; R2 t2]`` mapping 3-D points ``x`` (3, n) to 2-D ``xp`` (2, n).

    Returns the translation (2,) and the scale ``(|R1| + |R2|) / 2`` (spec §5.4 step 3).
    """
    n = xp.shape[1]
    a = np.zeros([2 * n, 8])
    a[0::2, 0:3] = x.T
    a[0::2, 3] = 1
    a[1::2, 4:7] = x.T
    a[1::2, 7] = 1
    b = np.reshape(xp.T, [2 * n, 1])
    k = np.linalg.lstsq(a, b, rcond=None)[0][:, 0]
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(scale)


def align_img(image_rgb_u8: np.ndarray, lm: np.ndarray, lm3d: np.ndarray, target_size: int = ALIGNED_SIZE,
              rescale_factor: float = RESCALE_FACTOR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align an image to the 3DMM network's input (upstream ``align_img``, spec §5.4 steps 3-4).

    ``lm``: 68 (or 5) landmarks with y pointing UP (y' = H - 1 - y); ``lm3d``: the (5, 3) standard points.
    Returns ``trans_params`` [w0, h0, s, tx, ty], the target_size^2 uint8 RGB crop (PIL bicubic
    resize by s, then a crop that pads with black outside the image) and the landmarks in it.
    """
    h0, w0 = image_rgb_u8.shape[:2]
    lm5 = lm if lm.shape[0] == 5 else five_points(lm)
    t, s_pos = pos(lm5.T, lm3d.T)
    s = rescale_factor / s_pos

    # int() truncates toward zero like upstream's astype(np.int32).
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - target_size / 2 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - target_size / 2 + (h0 / 2 - t[1]) * s)
    resized = Image.fromarray(image_rgb_u8).resize((w, h), resample=Image.BICUBIC)
    aligned = np.asarray(resized.crop((left, up, left + target_size, up + target_size)))

    lm_new = np.stack([lm[:, 0] - t[0] + w0 / 2, lm[:, 1] - t[1] + h0 / 2], axis=1) * s
    lm_new = lm_new - np.array([w / 2 - target_size / 2, h / 2 - target_size / 2])
    return np.array([w0, h0, s, t[0], t[1]]), aligned, lm_new
