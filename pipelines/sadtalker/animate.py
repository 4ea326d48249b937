"""Keypoint transformation and frame rendering (upstream ``make_animation.py``, spec §3.8, §5.7).

MappingNet turns each 27-frame coefficient window into head-pose bin logits, a translation and
45 expression offsets; these move the source's canonical keypoints to the source / driving
keypoints that the generator warps between. All functions take a batch of frames.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F

from .generator import OcclusionAwareSPADEGenerator
from .kp_detector import KPDetector
from .render_config import POSE_BIN_DEGREES, POSE_BINS, POSE_OFFSET_DEGREES, UPSTREAM_PI

MappingFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def headpose_pred_to_degree(logits: torch.Tensor) -> torch.Tensor:
    """(b, 66) bin logits -> (b,) degrees: expected bin index * 3 - 99.

    Upstream calls ``F.softmax`` without a dim, which resolves to dim 1 for 2-D input (spec §3.8).
    """
    bins = torch.arange(POSE_BINS, dtype=logits.dtype, device=logits.device)
    return torch.sum(F.softmax(logits, dim=1) * bins, 1) * POSE_BIN_DEGREES - POSE_OFFSET_DEGREES


def get_rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(b, 3, 3) R = Rx(pitch) Ry(yaw) Rz(roll) from angles in degrees, converted with 3.14 (spec §3.8)."""
    yaw, pitch, roll = (a / 180 * UPSTREAM_PI for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)
    rx = torch.stack([one, zero, zero,
                      zero, torch.cos(pitch), -torch.sin(pitch),
                      zero, torch.sin(pitch), torch.cos(pitch)], dim=1).view(-1, 3, 3)
    ry = torch.stack([torch.cos(yaw), zero, torch.sin(yaw),
                      zero, one, zero,
                      -torch.sin(yaw), zero, torch.cos(yaw)], dim=1).view(-1, 3, 3)
    rz = torch.stack([torch.cos(roll), -torch.sin(roll), zero,
                      torch.sin(roll), torch.cos(roll), zero,
                      zero, zero, one], dim=1).view(-1, 3, 3)
    return rx @ ry @ rz


def keypoint_transformation(kp_canonical: torch.Tensor, he: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``R kp + (0, t_y, 0) + exp`` for MappingNet output ``he``; a batch-1 ``kp_canonical`` is broadcast.

    Upstream zeroes t_x and t_z (spec §3.8), so only the vertical translation moves the keypoints.
    """
    rot = get_rotation_matrix(headpose_pred_to_degree(he["yaw"]), headpose_pred_to_degree(he["pitch"]),
                              headpose_pred_to_degree(he["roll"]))
    kp_rotated = torch.matmul(kp_canonical, rot.transpose(1, 2))
    t = he["t"] * torch.tensor([0.0, 1.0, 0.0], dtype=he["t"].dtype, device=he["t"].device)
    exp = he["exp"].view(he["exp"].shape[0], -1, 3)
    return kp_rotated + t.unsqueeze(1) + exp


def source_keypoints(source_image: torch.Tensor, source_semantics: torch.Tensor, kp_detector: KPDetector,
                     mapping: MappingFn) -> tuple[torch.Tensor, torch.Tensor]:
    """(kp_canonical, kp_source), each (1, 15, 3), for a (1, 3, S, S) source and its (1, C, 27) window."""
    kp_canonical = kp_detector(source_image)
    return kp_canonical, keypoint_transformation(kp_canonical, mapping(source_semantics))


@torch.no_grad()
def make_animation(source_image: torch.Tensor, source_semantics: torch.Tensor, target_semantics: torch.Tensor,
                   kp_detector: KPDetector, mapping: MappingFn, generator: OcclusionAwareSPADEGenerator,
                   frames_per_batch: int) -> Iterator[torch.Tensor]:
    """Render every frame: yields (n, 3, S, S) predictions for consecutive chunks of ``frames_per_batch``
    of the (N, C, 27) ``target_semantics`` windows, in frame order.

    Frames are independent (BatchNorm in eval mode, spec §5.6 step 6), so the chunk size only
    trades memory for speed; the source volume and keypoints are computed once. (As a decorator,
    ``no_grad`` applies around each step of the iterator only, not to the caller between steps.)
    """
    kp_canonical, kp_source = source_keypoints(source_image, source_semantics, kp_detector, mapping)
    feature_3d = generator.encode_source(source_image)
    for start in range(0, target_semantics.shape[0], frames_per_batch):
        kp_driving = keypoint_transformation(kp_canonical, mapping(target_semantics[start:start + frames_per_batch]))
        yield generator.render(feature_3d, kp_source, kp_driving)["prediction"]
