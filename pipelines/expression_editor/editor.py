"""The ExpressionEditor node's image and keypoint math, quirks included (spec §4.2–§4.11).

Each function computes one named quantity of the node's data flow. Keypoints are float32 torch
tensors (1, 21, 3) with rows (x right, y down, z), and row-vector keypoints are rotated as k·Rᵀ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Mapping

import cv2
import numpy as np
import torch

from pipelines.expression_editor.motion_extractor import headpose_degrees

CROP_FACTOR = 1.7          # node default; the reference image always uses 1.7 (§4.2)
OUTPUT_SIZE = 512          # decoder output and mask template size (§2.4, §4.11)
NETWORK_SIZE = 256         # F and M input size (§4.3)
MOUTH_KEYPOINTS = (14, 17, 19, 20)
EYE_KEYPOINTS = (1, 2, 11, 13, 15, 16)
GLOBAL_KEYPOINT = 5        # behaves like a whole-face shift (§4.5, §4.6)

X, Y, Z = 0, 1, 2


# ---- face crop (§4.2) ------------------------------------------------------------------------

def crop_region(box, image_wh: tuple[int, int], crop_factor: float = CROP_FACTOR) -> tuple[int, int, int, int]:
    """The node's square crop around ``box`` (xyxy), shifted into the image, possibly still
    extending past its right/bottom edge; the whole (non-square) image when ``box`` is None."""
    w, h = image_wh
    if box is None:
        return 0, 0, w, h
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    side = max(bw * crop_factor, bh * crop_factor)
    kx, ky = int(x1 + bw / 2), int(y1 + bh / 2)
    nx1, nx2 = int(kx - side / 2), int(kx + side / 2)
    ny1, ny2 = int(ky - side / 2), int(ky + side / 2)
    nx1, nx2 = _shift_inside(nx1, nx2, w)
    ny1, ny2 = _shift_inside(ny1, ny2, h)
    if nx2 > w and ny2 > h:
        over = min(nx2 - w, ny2 - h)
        nx2, ny2 = nx2 - over, ny2 - over
    return int(nx1), int(ny1), int(nx2), int(ny2)


def _shift_inside(lo: int, hi: int, size: int) -> tuple[int, int]:
    """Shift right if it starts before 0, else left if it ends past ``size`` (then right again if
    that made it start before 0, leaving it past ``size``)."""
    if lo < 0:
        return 0, hi - lo
    if hi > size:
        lo, hi = lo - (hi - size), size
        if lo < 0:
            return 0, hi - lo
    return lo, hi


def clipped_region(region, image_wh: tuple[int, int]) -> tuple[tuple[int, int, int, int], bool]:
    """The visible part of ``region`` and whether clipping happened (the node's ``is_changed``)."""
    x1, y1, x2, y2 = region
    w, h = image_wh
    return (x1, y1, min(x2, w), min(y2, h)), x2 > w or y2 > h


def face_crop(image: np.ndarray, region) -> np.ndarray:
    """``image[region]``, padded with black at the right/bottom where the region leaves the image."""
    x1, y1, x2, y2 = region
    visible = image[y1:y2, x1:x2]
    pad_bottom, pad_right = (y2 - y1) - visible.shape[0], (x2 - x1) - visible.shape[1]
    if pad_bottom or pad_right:
        visible = cv2.copyMakeBorder(visible, 0, pad_bottom, 0, pad_right, cv2.BORDER_CONSTANT, value=0)
    return visible


def crop_transforms(region, image_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """2×3 maps from 512-px crop coordinates to the source: (mask, image).

    The mask map scales each axis to the *clipped* size; the image map, when clipping happened,
    scales both axes by the *unclipped* width instead (the node's quirk, §4.2 step 6)."""
    (x1, y1, x2c, y2c), changed = clipped_region(region, image_wh)
    mask_m = np.float32([[(x2c - x1) / OUTPUT_SIZE, 0, x1], [0, (y2c - y1) / OUTPUT_SIZE, y1]])
    if not changed:
        return mask_m, mask_m
    s = (region[2] - region[0]) / OUTPUT_SIZE
    return mask_m, np.float32([[s, 0, x1], [0, s, y1]])


@lru_cache(maxsize=1)
def mask_template() -> np.ndarray:
    """LivePortrait's feathered 512×512 paste-back mask: 255 inside [16, 496]², falling 16 levels
    per pixel of Euclidean distance from that square (§4.11). Read-only, HWC with 3 equal channels."""
    coords = np.arange(OUTPUT_SIZE, dtype=np.float64)
    outside = np.maximum(np.maximum(16 - coords, 0), coords - 496)
    distance = np.hypot(outside[:, None], outside[None, :])
    mask = np.round(np.clip(255 - 16 * distance, 0, 255)).astype(np.uint8)
    mask = np.repeat(mask[:, :, None], 3, axis=2)
    mask.flags.writeable = False
    return mask


def source_mask(mask_m: np.ndarray, image_wh: tuple[int, int]) -> np.ndarray:
    """The mask template warped into the source (uint8 H×W×3), bilinear, black outside (§4.2 step 7)."""
    return cv2.warpAffine(mask_template(), mask_m, image_wh, flags=cv2.INTER_LINEAR)


def network_input(face: np.ndarray) -> torch.Tensor:
    """(1, 3, 256, 256) float32 RGB in [0, 1]: INTER_AREA when the crop is taller than 256,
    else INTER_LINEAR (only the height is tested, §4.3)."""
    if face.shape[:2] != (NETWORK_SIZE, NETWORK_SIZE):
        interpolation = cv2.INTER_AREA if face.shape[0] > NETWORK_SIZE else cv2.INTER_LINEAR
        face = cv2.resize(face, (NETWORK_SIZE, NETWORK_SIZE), interpolation=interpolation)
    x = np.clip(face[np.newaxis].astype(np.float32) / 255.0, 0, 1)
    return torch.from_numpy(x).permute(0, 3, 1, 2)


# ---- keypoints (§4.4–§4.9) -------------------------------------------------------------------

def rotation_matrix_t(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) Rᵀ for R = Rz(roll)·Ry(yaw)·Rx(pitch), angles in degrees (§4.4)."""
    p, y, r = (a.reshape(-1, 1).float() / 180 * math.pi for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    rot_x = torch.cat([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], 1).view(-1, 3, 3)
    rot_y = torch.cat([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).view(-1, 3, 3)
    rot_z = torch.cat([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], 1).view(-1, 3, 3)
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)


@dataclass
class MotionInfo:
    """The motion extractor's output as the node keeps it: keypoints (1, 21, 3), pose (1, 1) degrees."""

    kp: torch.Tensor
    exp: torch.Tensor
    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    scale: torch.Tensor


def motion_info(out: Mapping[str, torch.Tensor]) -> MotionInfo:
    """The motion extractor's dict as the node keeps it: keypoints reshaped to (1, 21, 3), the
    pose logits decoded to degrees (§2.2), everything float32."""
    b = out["kp"].shape[0]
    return MotionInfo(
        kp=out["kp"].float().reshape(b, -1, 3), exp=out["exp"].float().reshape(b, -1, 3),
        pitch=headpose_degrees(out["pitch"].float()), yaw=headpose_degrees(out["yaw"].float()),
        roll=headpose_degrees(out["roll"].float()), t=out["t"].float(), scale=out["scale"].float(),
    )


def source_keypoints(info: MotionInfo) -> torch.Tensor:
    """x_s = s·(kp·Rᵀ + exp) + (tx, ty, 0): the official formula, z translation dropped (§4.4)."""
    x = info.kp @ rotation_matrix_t(info.pitch, info.yaw, info.roll) + info.exp
    x = x * info.scale[..., None]
    return torch.cat([x[..., :2] + info.t[:, None, :2], x[..., 2:]], dim=2)


@dataclass(frozen=True)
class Sliders:
    """The request's editing fields. ``blink`` is the node's ``eyes`` and ``aaa`` its ``mouth`` (§4.7)."""

    rotate_pitch: float = 0.0
    rotate_yaw: float = 0.0
    rotate_roll: float = 0.0
    blink: float = 0.0
    eyebrow: float = 0.0
    wink: float = 0.0
    pupil_x: float = 0.0
    pupil_y: float = 0.0
    aaa: float = 0.0
    eee: float = 0.0
    woo: float = 0.0
    smile: float = 0.0

    @classmethod
    def from_params(cls, params) -> "Sliders":
        """The sliders of a request's ``Params`` (same field names)."""
        return cls(**{f.name: float(getattr(params, f.name)) for f in fields(cls)})


# (keypoint, axis, coefficient per slider unit), applied in the node's order (§4.7).
SMILE = ((20, Y, -0.01), (14, Y, -0.02), (17, Y, 0.0065), (17, Z, 0.003), (13, Y, -0.00275),
         (16, Y, -0.00275), (3, Y, -0.0035), (7, Y, -0.0035))
AAA = ((19, Y, 0.001), (19, Z, 0.0001), (17, Y, -0.0001))
EEE = ((20, Z, -0.001), (20, Y, -0.001), (14, Y, -0.001))
WOO = ((14, Y, 0.001), (3, Y, -0.0005), (7, Y, -0.0005), (17, Z, -0.0005))
WINK = ((11, Y, 0.001), (13, Y, -0.0003), (17, X, 0.0003), (17, Y, 0.0003), (3, Y, -0.0003))
PUPIL_X_POSITIVE = ((11, X, 0.0007), (15, X, 0.001))
PUPIL_X_OTHER = ((11, X, 0.001), (15, X, 0.0007))
PUPIL_Y = ((11, Y, -0.001), (15, Y, -0.001))
EYES = ((11, Y, -0.001), (13, Y, 0.0003), (15, Y, -0.001), (16, Y, 0.0003), (1, Y, -0.00025), (2, Y, 0.00025))
EYEBROW_POSITIVE = ((1, Y, 0.001), (2, Y, -0.001))
EYEBROW_OTHER = ((1, X, -0.001), (2, X, 0.001), (1, Y, 0.0003), (2, Y, -0.0003))
AAA_PITCH = -0.05          # degrees of pitch per unit of aaa
WINK_ROLL_YAW = -0.1       # degrees of roll and of yaw per unit of wink


def _add(delta: torch.Tensor, table, amount: float) -> None:
    # In place, one float32 element at a time, as the node does (the order matters for rounding).
    for k, axis, coefficient in table:
        delta[0, k, axis] += amount * coefficient


def command_angles(sliders: Sliders) -> list[float]:
    """(P, Y, Rl) before the reference and slider side effects: the node negates yaw first (§4.5)."""
    return [sliders.rotate_pitch, -sliders.rotate_yaw, sliders.rotate_roll]


def reference_edit(delta: torch.Tensor, angles: list, ref_exp: torch.Tensor, ref_pose, parts: str,
                   ratio: float = 1.0) -> None:
    """Add the reference's expression and/or absolute pose on top of the source's (§4.5 step 4).

    ``ref_exp`` must already have keypoint 5's x and y zeroed (``reference_expression``)."""
    if parts in ("OnlyExpression", "All"):
        delta += ref_exp * ratio
    if parts in ("OnlyRotation", "All"):
        for i, angle in enumerate(ref_pose):
            angles[i] = angles[i] + angle * ratio
    elif parts in ("OnlyMouth", "OnlyEyes"):
        for k in MOUTH_KEYPOINTS if parts == "OnlyMouth" else EYE_KEYPOINTS:
            delta[0, k] += ref_exp[0, k] * ratio


def reference_expression(exp: torch.Tensor) -> torch.Tensor:
    """The reference expression with keypoint 5's x and y zeroed; z stays (§4.5 step 2)."""
    out = exp.clone()
    out[0, GLOBAL_KEYPOINT, :2] = 0
    return out


def slider_edit(delta: torch.Tensor, angles: list, sliders: Sliders) -> torch.Tensor:
    """The node's ``calc_fe``: add the slider table to Δ in place; returns (P, Y, Rl) in degrees
    as float32 (3,) with aaa's and wink's pose side effects (§4.7)."""
    s = sliders
    pitch, yaw, roll = angles
    _add(delta, SMILE, s.smile)
    _add(delta, AAA, s.aaa)
    pitch = pitch + s.aaa * AAA_PITCH
    _add(delta, EEE, s.eee)
    _add(delta, WOO, s.woo)
    _add(delta, WINK, s.wink)
    roll = roll + s.wink * WINK_ROLL_YAW
    yaw = yaw + s.wink * WINK_ROLL_YAW
    _add(delta, PUPIL_X_POSITIVE if s.pupil_x > 0 else PUPIL_X_OTHER, s.pupil_x)
    _add(delta, PUPIL_Y, s.pupil_y)
    eyes = s.blink - s.pupil_y / 2
    _add(delta, EYES, eyes)
    _add(delta, EYEBROW_POSITIVE if s.eyebrow > 0 else EYEBROW_OTHER, s.eyebrow)
    return torch.tensor([float(pitch), float(yaw), float(roll)], dtype=torch.float32)


def expression_base(info: MotionInfo, src_ratio: float = 1.0) -> torch.Tensor:
    """kp + exp', where exp' scales the source expression by ``src_ratio`` except keypoint 5,
    which keeps its full value (§4.6)."""
    exp = info.exp * src_ratio
    exp[0, GLOBAL_KEYPOINT] = info.exp[0, GLOBAL_KEYPOINT]
    return exp + info.kp


def driving_keypoints(info: MotionInfo, base: torch.Tensor, delta: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x_d = s·((kp + exp' + Δ)·R_newᵀ) + t with all three components of t: the expression is
    rotated with the keypoints and tz is added (the node's formula, §4.8)."""
    rotation = rotation_matrix_t(info.pitch + angles[0], info.yaw + angles[1], info.roll + angles[2])
    return info.scale * ((base + delta) @ rotation) + info.t


def stitched(stitching: torch.nn.Module, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """x_d + S([x_s, x_d])[:63] per keypoint, then the last two outputs shift every keypoint's x, y (§4.9)."""
    b, n = x_s.shape[:2]
    delta = stitching(torch.cat([x_s.reshape(b, -1), x_d.reshape(b, -1)], dim=1))
    out = x_d + delta[:, : 3 * n].reshape(b, n, 3)
    return torch.cat([out[..., :2] + delta[:, None, 3 * n: 3 * n + 2], out[..., 2:]], dim=2)


# ---- output (§4.10–§4.11) --------------------------------------------------------------------

def truncated_u8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] → H×W×3 uint8 by clipping and *truncating* ×255, as the node does."""
    x = np.clip(image[0].permute(1, 2, 0).detach().float().cpu().numpy(), 0, 1)
    return (x * 255).astype(np.uint8)


def paste_back(crop: np.ndarray, source: np.ndarray, image_m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Warp the 512 crop into the source frame and blend it with the warped mask, float32,
    truncated to uint8 (§4.11)."""
    h, w = source.shape[:2]
    full = cv2.warpAffine(crop, image_m, (w, h), flags=cv2.INTER_LINEAR)
    alpha = mask.astype(np.float32) / 255.0
    return np.clip(alpha * full + (1 - alpha) * source, 0, 255).astype(np.uint8)
