"""Tiny random checkpoints of the face renderer, in the official bundle key layout, and a tiny BFM file.

Same classes and keys as ``SadTalker_V0.0.2_*.safetensors`` (``down.weight`` buffer,
spectral-norm ``weight_orig``/``weight_u``/``weight_v`` triples, BN ``num_batches_tracked``)
with small widths. The geometry stays official: 15 keypoints, 256 px input, 1/4 feature
resolution, so the glue and the crop/alignment code run unchanged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.io import savemat

from ..common.tiny_state import random_state
from .generator import OcclusionAwareSPADEGenerator
from .kp_detector import KPDetector
from .render_config import GENERATOR, GENERATOR_PREFIX, KP_DETECTOR, KP_DETECTOR_PREFIX

# The 1x1 conv output is re-read as (channels, depth): reshape_channel = min(max_features,
# block_expansion * 2**num_blocks) * reshape_depth.
TINY_KP_DETECTOR = {**KP_DETECTOR, "block_expansion": 4, "max_features": 16, "reshape_channel": 16 * 16}
# The generator's 3-D volume is (reshape_channel, reshape_depth) = max_features channels, and the
# dense-motion network compresses those reshape_channel (= feature_channel) channels; the decoder
# width follows block_expansion * 2**num_down_blocks.
TINY_GENERATOR = {
    **GENERATOR,
    "feature_channel": 2,
    "block_expansion": 2,
    "max_features": 4,
    "reshape_channel": 2,
    "reshape_depth": 2,
    "num_resblocks": 1,
    "dense_motion_params": {"block_expansion": 2, "max_features": 8, "num_blocks": 2, "reshape_depth": 2,
                            "compress": 1},
}
SPECTRAL_NORM_ITERATIONS = 30


def spectral_norm_triple(weight: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``weight_orig``/``weight_u``/``weight_v`` as torch's spectral norm stores them after training:
    u, v from power iterations on W = weight reshaped to (out, -1), so u . W v is its top singular value."""
    w = weight.double().reshape(weight.shape[0], -1)
    v = torch.nn.functional.normalize(torch.randn(w.shape[1], generator=generator, dtype=torch.float64), dim=0)
    for _ in range(SPECTRAL_NORM_ITERATIONS):
        u = torch.nn.functional.normalize(w @ v, dim=0)
        v = torch.nn.functional.normalize(w.T @ u, dim=0)
    u = torch.nn.functional.normalize(w @ v, dim=0)
    return {"weight_orig": weight, "weight_u": u.float(), "weight_v": v.float()}


def tiny_render_state(seed: int = 0) -> dict[str, tuple[dict[str, torch.Tensor], dict]]:
    """{bundle prefix: (state dict without the prefix, config)} for ``kp_extractor.`` and ``generator.``.

    The bundle key of a tensor is ``prefix + key``; the bundle's sidecar maps each prefix to its config.
    """
    generator = torch.Generator().manual_seed(seed)
    kp_state = random_state(KPDetector(**TINY_KP_DETECTOR), generator)
    renderer = OcclusionAwareSPADEGenerator(**TINY_GENERATOR)
    gen_state = random_state(renderer, generator)
    for key in renderer.spectral_norm_keys():
        prefix = key[: -len("weight")]
        for name, value in spectral_norm_triple(gen_state.pop(key), generator).items():
            gen_state[prefix + name] = value
    return {KP_DETECTOR_PREFIX: (kp_state, TINY_KP_DETECTOR), GENERATOR_PREFIX: (gen_state, TINY_GENERATOR)}


def synthetic_lm3d() -> np.ndarray:
    """(68, 3) float32 mean-face landmarks in the iBUG-68 order and the units of the real file
    (about [-0.75, 0.75], z towards the camera), laid out symmetrically."""
    pts = np.zeros((68, 3), np.float32)
    chin = np.linspace(-np.pi * 0.95, -np.pi * 0.05, 17)
    pts[0:17] = np.stack([0.75 * np.cos(chin), 0.2 + 0.85 * np.sin(chin), -0.5 - 0.4 * np.sin(chin)], 1)
    brow = np.linspace(-0.6, -0.1, 5)
    pts[17:22] = np.stack([brow, 0.45 + 0.05 * np.cos(brow * 5), np.full(5, 0.05)], 1)
    pts[22:27] = pts[17:22][::-1] * [-1, 1, 1]
    pts[27:31] = np.stack([np.zeros(4), np.linspace(0.25, -0.05, 4), np.linspace(0.25, 0.55, 4)], 1)
    pts[31:36] = np.stack([np.linspace(-0.15, 0.15, 5), np.full(5, -0.12), np.full(5, 0.4)], 1)
    eye = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    pts[36:42] = np.stack([-0.31 - 0.1 * np.cos(eye), 0.29 + 0.03 * np.sin(eye), np.full(6, 0.13)], 1)
    pts[42:48] = np.stack([0.31 + 0.1 * np.cos(eye + np.pi), 0.29 + 0.03 * np.sin(eye), np.full(6, 0.13)], 1)
    mouth = np.linspace(np.pi, -np.pi, 12, endpoint=False)
    pts[48:60] = np.stack([0.25 * np.cos(mouth), -0.38 + 0.08 * np.sin(mouth), np.full(12, 0.22)], 1)
    inner = np.linspace(np.pi, -np.pi, 8, endpoint=False)
    pts[60:68] = np.stack([0.15 * np.cos(inner), -0.38 + 0.03 * np.sin(inner), np.full(8, 0.24)], 1)
    return pts


def write_tiny_lm3d(path: Path) -> Path:
    """Write a ``similarity_Lm3D_all.mat`` (MAT v5, ``lm`` 68 x 3 float32 as the real file) with
    synthetic landmarks at ``path``; the real values come from the download."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"lm": synthetic_lm3d()})
    return path
