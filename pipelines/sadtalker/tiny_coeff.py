"""Tiny random checkpoints of the audio/coefficient networks, in the official key layout.

Same classes, same file formats and keys as the official files, small widths, so tests and
tiny profiles load them through the production loaders in seconds on CPU. The 64 expression
coefficients, 6 pose values, 46 pose styles, 257 net_recon outputs and the MappingNet heads
keep their official sizes (the glue and renderer depend on them); widths shrink.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..common.checkpoint import write_config_sidecar
from ..common.tiny_state import random_state
from .audio2exp import ExpNet
from .audio2pose import PoseVAE
from .config import (AUDIO2EXP, AUDIO2EXP_PREFIX, AUDIO2POSE, AUDIO2POSE_PREFIX, MAPPING_CROP, MAPPING_CROP_FILE,
                     MAPPING_FULL, MAPPING_FULL_FILE, MAPPING_KEY, NET_RECON, NET_RECON_PREFIX)
from .mapping_net import MappingNet
from .net_recon import ReconNet

TINY_AUDIO_CHANNELS = [4, 4, 8, 8, 16]
TINY_AUDIO2EXP = {**AUDIO2EXP, "audio_channels": TINY_AUDIO_CHANNELS}
# seq_len must stay a multiple of 8 (the ResUnet halves time three times); the MLP's last
# layer must equal seq_len * pose_dim.
TINY_AUDIO2POSE = {
    **AUDIO2POSE,
    "audio_channels": TINY_AUDIO_CHANNELS,
    "seq_len": 8,
    "latent_size": 8,
    "decoder_layer_sizes": [16, 8 * AUDIO2POSE["pose_dim"]],
    "encoder_layer_sizes": [16, 16],
    "resunet_filters": [4, 4, 8, 8],
    "discriminator_channels": [8, 8, 8],
}
TINY_NET_RECON = {**NET_RECON, "layers": [1, 1, 1, 1], "width": 8}
TINY_MAPPING_CROP = {**MAPPING_CROP, "descriptor_nc": 16}
TINY_MAPPING_FULL = {**MAPPING_FULL, "descriptor_nc": 16}


def tiny_coeff_state(seed: int = 0) -> dict[str, tuple[dict[str, torch.Tensor], dict]]:
    """{bundle prefix: (state dict without the prefix, config)} for audio2exp, audio2pose, face_3drecon.

    The bundle key of a tensor is ``prefix + key``; the bundle's sidecar maps each prefix to its config.
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for prefix, cls, config in ((AUDIO2EXP_PREFIX, ExpNet, TINY_AUDIO2EXP),
                                (AUDIO2POSE_PREFIX, PoseVAE, TINY_AUDIO2POSE),
                                (NET_RECON_PREFIX, ReconNet, TINY_NET_RECON)):
        out[prefix] = (random_state(cls(**config), generator), config)
    return out


def write_tiny_mapping(dest_dir: Path, seed: int = 0) -> list[Path]:
    """Write ``sadtalker/mapping_00229-model.pth.tar`` and ``sadtalker/mapping_00109-model.pth.tar``
    (dict key ``mapping``, as the official pickles) with their config sidecars; returns the paths."""
    generator = torch.Generator().manual_seed(seed)
    folder = Path(dest_dir) / "sadtalker"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, config in ((MAPPING_CROP_FILE, TINY_MAPPING_CROP), (MAPPING_FULL_FILE, TINY_MAPPING_FULL)):
        path = folder / name
        torch.save({MAPPING_KEY: random_state(MappingNet(**config), generator)}, path)
        write_config_sidecar(path, config)
        paths.append(path)
    return paths
