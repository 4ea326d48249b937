"""Coefficient glue between the networks: blinks, pose smoothing, render targets and windows.

Pure numpy functions over (frames, channels) arrays; spec §3.4, §5.2 step 4, §5.4 step 5, §5.6.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

from .config import (BLINK_GAP_MAX, BLINK_GAP_MIN, BLINK_MIN_FRAMES, BLINK_SHAPE, COEFF_CROP, COEFF_EXP, COEFF_POSE,
                     RECON_ANGLE, RECON_EXP, RECON_TRANS, SAVGOL_ORDER, SAVGOL_WINDOW, SEMANTIC_RADIUS)


def blink_schedule(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Eye-blink ratio per frame (N,) float32, upstream ``generate_blink_seq_randomly`` (§5.2 step 4).

    Gaps are drawn uniformly from ``range(min(10, N), min(N // 2, 70))`` until a blink would
    not end before the last frame. Upstream crashes on the empty range at N = 21; an empty
    range means no blinks here, as for N <= 20 (spec §7).
    """
    ratio = np.zeros(num_frames, dtype=np.float32)
    low, high = min(BLINK_GAP_MIN, num_frames), min(num_frames // 2, BLINK_GAP_MAX)
    if num_frames < BLINK_MIN_FRAMES or low >= high:
        return ratio
    frame_id = 0
    while True:
        start = frame_id + int(rng.integers(low, high))
        if start + len(BLINK_SHAPE) > num_frames - 1:
            return ratio
        ratio[start:start + len(BLINK_SHAPE)] = BLINK_SHAPE
        frame_id = start + len(BLINK_SHAPE)


def savgol_window(num_frames: int) -> int:
    """13, or for shorter clips the largest odd number <= N, as upstream (§3.4)."""
    if num_frames < SAVGOL_WINDOW:
        return int((num_frames - 1) / 2) * 2 + 1
    return SAVGOL_WINDOW


def smooth_pose(pose: np.ndarray) -> np.ndarray:
    """Savitzky-Golay (13, 2) over time (mode 'interp') of the (N, 6) pose.

    Needs N >= 3 (a window above the polynomial order); shorter audio is refused earlier (§7).
    """
    window = savgol_window(len(pose))
    if window <= SAVGOL_ORDER:
        raise ValueError(f"pose smoothing needs at least {SAVGOL_ORDER + 1} frames, got {len(pose)}")
    return savgol_filter(pose, window, SAVGOL_ORDER, axis=0)


def source_coefficients(recon: np.ndarray, trans_params: np.ndarray) -> np.ndarray:
    """(73,) ``coeff_3dmm`` = exp(64) | angle(3) | trans(3) | s, tx, ty from net_recon's 257 outputs
    and the alignment's ``trans_params = [w0, h0, s, tx, ty]`` (§5.4 step 5)."""
    recon = np.asarray(recon, dtype=np.float32).reshape(-1)
    crop = np.asarray(trans_params, dtype=np.float32).reshape(-1)[2:5]
    return np.concatenate([recon[RECON_EXP], recon[RECON_ANGLE], recon[RECON_TRANS], crop])


def generated_coefficients(exp: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(N, 70) = ExpNet's expression (unsmoothed) | PoseVAE's pose after smoothing (§3.4)."""
    return np.concatenate([exp, smooth_pose(pose)], axis=1).astype(np.float32)


def render_targets(generated: np.ndarray, source: np.ndarray, expression_scale: float, full_frame: bool,
                   still: bool) -> np.ndarray:
    """Per-frame coefficients for MappingNet (§5.6 step 3): (N, 70), or (N, 73) for full/extfull.

    Only the generated expression is scaled. full/extfull append the source crop parameters;
    still replaces pose (and crop parameters) by the source's.
    """
    target = np.array(generated[:, :COEFF_POSE.stop], dtype=np.float32)
    target[:, COEFF_EXP] = target[:, COEFF_EXP] * np.float32(expression_scale)
    if full_frame:
        target = np.concatenate([target, np.repeat(source[None, COEFF_CROP], len(target), axis=0)], axis=1)
    if still:
        target[:, COEFF_POSE.start:] = source[COEFF_POSE.start:target.shape[1]]
    return target


def source_semantics(source: np.ndarray, full_frame: bool, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """(C, 2r+1): the source coefficients held constant over the window (70, or 73 for full/extfull)."""
    channels = COEFF_CROP.stop if full_frame else COEFF_POSE.stop
    return np.repeat(np.asarray(source, dtype=np.float32)[:channels, None], 2 * radius + 1, axis=1)


def transform_semantic_target(coeffs: np.ndarray, frame_index: int, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """(C, 2r+1): frames ``i - r .. i + r`` clamped to the clip, channels first (§5.6 step 4)."""
    index = np.clip(np.arange(frame_index - radius, frame_index + radius + 1), 0, len(coeffs) - 1)
    return coeffs[index].T


def semantic_windows(coeffs: np.ndarray, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """(N, C, 2r+1): ``transform_semantic_target`` for every frame."""
    index = np.clip(np.arange(len(coeffs))[:, None] + np.arange(-radius, radius + 1)[None, :], 0, len(coeffs) - 1)
    return coeffs[index].transpose(0, 2, 1)
