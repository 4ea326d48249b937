"""Tiny random checkpoints of GFPGAN, ParseNet, RetinaFace and AWing FAN in the official formats.

Same files, nesting and key names as the official ones (``params_ema`` entry, plain state
dicts, ``state_dict`` entry), with narrow configurations recorded beside each file
(``<file>.config.json``) so the production loaders build the matching network. The geometry
stays official: 512 px faces for GFPGAN and ParseNet, the three RetinaFace levels and anchors,
and 256 px input / 64 px heatmaps with 98 landmarks for the FAN, so every caller runs unchanged.

RetinaFace is the one file not drawn at random: random tiny weights fire on every anchor (a
thousand "faces" per frame for the enhancer), so its state is deterministic by construction and
finds one face at the image's brightest region, as faceswap.md §9.4 does for SCRFD.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from .checkpoint import write_config_sidecar
from .face_loader import FAN_FILE, RETINAFACE_FILE
from .face_restore_loader import GFPGAN_FILE, PARSENET_FILE
from .fan_awing import FAN, FANConfig
from .gfpgan import GFPGANConfig, GFPGANv1Clean
from .parsenet import ParseNet, ParseNetConfig
from .retinaface import RetinaFace, RetinaFaceConfig
from .tiny_state import random_state

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


# Five points of a frontal face relative to its anchor box, in units of the box size.
FACE_LAYOUT = torch.tensor([[-0.17, -0.1], [0.17, -0.1], [0.0, 0.05], [-0.13, 0.2], [0.13, 0.2]])


def bright_trigger_retinaface_state(net: RetinaFace, gain: float = 0.01, box_log_scale: float = 15.0) -> dict:
    """A RetinaFace state that finds exactly one face where the image is brightest, none on dark or
    mid-grey images.

    Every conv averages its inputs and every BatchNorm is the identity, so the features are blurred
    ``relu(pixel - mean)``; only the coarsest level's first anchor scores them (``gain``), boxes are
    20x their anchor (NMS leaves one), and the landmarks sit in a frontal layout around the anchor.
    """
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith(("num_batches_tracked", "running_mean", ".bias")) or "Head" in key:
            state[key] = torch.zeros_like(value)
        elif key.endswith("running_var") or value.ndim == 1:
            state[key] = torch.ones_like(value)
        else:
            state[key] = torch.full_like(value, 1.0 / value[0].numel())
    for level in range(len(net.ClassHead)):
        state[f"ClassHead.{level}.conv1x1.bias"][1::2] = -30.0
        state[f"BboxHead.{level}.conv1x1.bias"].view(-1, 4)[:, 2:] = box_log_scale
        state[f"LandmarkHead.{level}.conv1x1.bias"].view(-1, 5, 2)[:] = FACE_LAYOUT / net.config.variance[0]
    last = len(net.ClassHead) - 1
    state[f"ClassHead.{last}.conv1x1.weight"][1] = gain / net.config.out_channel
    state[f"ClassHead.{last}.conv1x1.bias"][1] = 0.0
    return state


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
        "retinaface": _write(dest / RETINAFACE_DEST, bright_trigger_retinaface_state(RetinaFace(TINY_RETINAFACE)),
                             TINY_RETINAFACE),
        "fan": _write(dest / FAN_DEST, {"state_dict": random_state(FAN(TINY_FAN), gen)}, TINY_FAN),
    }
