"""Tiny random checkpoints of GFPGAN, ParseNet, RetinaFace and AWing FAN in the official formats.

Same files, nesting and key names as the official ones (``params_ema`` entry, plain state
dicts, ``state_dict`` entry), with narrow configurations recorded beside each file
(``<file>.config.json``) so the production loaders build the matching network. The geometry
stays official: 512 px faces for GFPGAN and ParseNet, the three RetinaFace levels and anchors,
and 256 px input / 64 px heatmaps with 98 landmarks for the FAN, so every caller runs unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from pipelines.sadtalker.face_loader import FAN_FILE, RETINAFACE_FILE
from pipelines.sadtalker.fan_awing import FAN, FANConfig
from pipelines.sadtalker.retinaface import RetinaFace, RetinaFaceConfig
from pipelines.sadtalker.tiny_coeff import random_state

from .checkpoint import write_config_sidecar
from .face_restore_loader import GFPGAN_FILE, PARSENET_FILE
from .gfpgan import GFPGANConfig, GFPGANv1Clean
from .parsenet import ParseNet, ParseNetConfig

# narrow=1/16 gives decoder widths 32..4 and U-Net widths 16..2 (still half the decoder's,
# as the SFT split needs).
TINY_GFPGAN = replace(GFPGANConfig(), num_style_feat=16, narrow=0.0625)
TINY_PARSENET = replace(ParseNetConfig(), base_ch=8, res_depth=2, ch_range=(8, 32))
TINY_RETINAFACE = replace(RetinaFaceConfig(), resnet_blocks=(1, 1, 1, 1), resnet_width=8, out_channel=16)
TINY_FAN = replace(FANConfig(), num_modules=2, num_features=32)

# Paths under the weights directory, as weights/manifest.toml places the official files.
GFPGAN_DEST = f"gfpgan/{GFPGAN_FILE}"
PARSENET_DEST = f"facexlib/{PARSENET_FILE}"
RETINAFACE_DEST = f"facexlib/{RETINAFACE_FILE}"
FAN_DEST = f"facexlib/{FAN_FILE}"


def _write(path: Path, payload: dict, config) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    write_config_sidecar(path, asdict(config))
    return path


def write_tiny_restore(dest_dir: Path | str, seed: int = 0) -> dict[str, Path]:
    """Write the four tiny checkpoints (and sidecars) under ``dest_dir``; returns their paths."""
    dest = Path(dest_dir)
    gen = torch.Generator().manual_seed(seed)
    return {
        "gfpgan": _write(dest / GFPGAN_DEST,
                         {"params_ema": random_state(GFPGANv1Clean(TINY_GFPGAN), gen)}, TINY_GFPGAN),
        "parsenet": _write(dest / PARSENET_DEST, random_state(ParseNet(TINY_PARSENET), gen), TINY_PARSENET),
        "retinaface": _write(dest / RETINAFACE_DEST, random_state(RetinaFace(TINY_RETINAFACE), gen),
                             TINY_RETINAFACE),
        "fan": _write(dest / FAN_DEST, {"state_dict": random_state(FAN(TINY_FAN), gen)}, TINY_FAN),
    }
