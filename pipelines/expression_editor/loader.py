"""Official LivePortrait checkpoint files → the five networks, loaded strictly (spec §3.1, §3.2).

Two layouts are read, chosen by file suffix:
* KwaiVGI ``.pth``: plain state dicts; ``stitching_retargeting_module.pth`` is a dict with the
  entries ``retarget_shoulder`` / ``retarget_mouth`` / ``retarget_eye``, each a state dict saved
  from a DDP-wrapped module (keys ``module.…``).
* Kijai ``.safetensors``: the same keys; the stitching file is flattened with the prefixes
  ``retarget_shoulder_module.`` / ``retarget_mouth_module.`` / ``retarget_eye_module.``.

A ``<file>.config.json`` sidecar (tiny checkpoints) replaces the official configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from pipelines.common.checkpoint import config_for, fold_spectral_norm, load_strict, read_state_file, with_prefix

from . import config
from .appearance_feature_extractor import AppearanceFeatureExtractor
from .motion_extractor import MotionExtractor
from .spade_generator import SPADEDecoder
from .stitching_retargeting_network import StitchingRetargetingNetwork
from .warping_network import WarpingNetwork

NETWORK_FILES = (
    "appearance_feature_extractor",
    "motion_extractor",
    "warping_module",
    "spade_generator",
    "stitching_retargeting_module",
)

# MLP name (config key) → its entry in the official stitching checkpoint (§3.1).
STITCHING_ENTRIES = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
DDP_PREFIX = "module."


@dataclass
class LivePortraitNetworks:
    """The networks in eval mode. The expression editor calls F, M, W, G and S; lip and eye are
    loaded because the official file holds them (§0)."""

    appearance: AppearanceFeatureExtractor
    motion: MotionExtractor
    warping: WarpingNetwork
    spade: SPADEDecoder
    stitching: StitchingRetargetingNetwork
    lip: StitchingRetargetingNetwork
    eye: StitchingRetargetingNetwork


def _placed(module: nn.Module, device, dtype: torch.dtype) -> nn.Module:
    return module.to(device=device, dtype=dtype).eval()


def load_appearance_feature_extractor(path: Path, device="cpu",
                                      dtype: torch.dtype = torch.float32) -> AppearanceFeatureExtractor:
    net = AppearanceFeatureExtractor(**config_for(path, config.APPEARANCE_FEATURE_EXTRACTOR))
    return _placed(load_strict(net, read_state_file(path), str(path)), device, dtype)


def load_motion_extractor(path: Path, device="cpu", dtype: torch.dtype = torch.float32) -> MotionExtractor:
    net = MotionExtractor(**config_for(path, config.MOTION_EXTRACTOR))
    return _placed(load_strict(net, read_state_file(path), str(path)), device, dtype)


def load_warping_module(path: Path, device="cpu", dtype: torch.dtype = torch.float32) -> WarpingNetwork:
    net = WarpingNetwork(**config_for(path, config.WARPING_MODULE))
    return _placed(load_strict(net, read_state_file(path), str(path)), device, dtype)


def load_spade_generator(path: Path, device="cpu", dtype: torch.dtype = torch.float32) -> SPADEDecoder:
    net = SPADEDecoder(**config_for(path, config.SPADE_GENERATOR))
    # Folded in float32 from the stored u and v before any cast (§2.4, §7.4).
    state = fold_spectral_norm(read_state_file(path))
    return _placed(load_strict(net, state, str(path)), device, dtype)


def _without_prefix_strict(state: Mapping[str, torch.Tensor], prefix: str, what: str) -> dict[str, torch.Tensor]:
    stray = sorted(k for k in state if not k.startswith(prefix))
    if stray:
        raise ValueError(f"{what}: keys without the prefix {prefix!r}: {stray[:5]}")
    return with_prefix(state, prefix)


def stitching_states(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """MLP name ("stitching", "lip", "eye") → its state dict with upstream key names."""
    path = Path(path)
    raw = read_state_file(path)
    if path.suffix == ".safetensors":
        prefixes = {name: f"{entry}_module." for name, entry in STITCHING_ENTRIES.items()}
        stray = sorted(k for k in raw if not any(k.startswith(p) for p in prefixes.values()))
        if stray:
            raise ValueError(f"{path}: keys outside {sorted(prefixes.values())}: {stray[:5]}")
        return {name: with_prefix(raw, prefix) for name, prefix in prefixes.items()}
    missing = [entry for entry in STITCHING_ENTRIES.values() if entry not in raw]
    if missing:
        raise ValueError(f"{path}: no {missing} entries (found {sorted(raw)[:5]})")
    return {name: _without_prefix_strict(raw[entry], DDP_PREFIX, f"{path}[{entry}]")
            for name, entry in STITCHING_ENTRIES.items()}


def load_stitching_retargeting(path: Path, device="cpu", dtype: torch.dtype = torch.float32
                               ) -> tuple[StitchingRetargetingNetwork, StitchingRetargetingNetwork,
                                          StitchingRetargetingNetwork]:
    """(stitching, lip, eye) MLPs from ``stitching_retargeting_module.{pth,safetensors}``."""
    configs = config_for(path, config.STITCHING_RETARGETING_MODULE)
    states = stitching_states(path)
    nets = []
    for name, entry in STITCHING_ENTRIES.items():
        net = StitchingRetargetingNetwork(**configs[name])
        nets.append(_placed(load_strict(net, states[name], f"{path}[{entry}]"), device, dtype))
    stitching, lip, eye = nets
    return stitching, lip, eye


def load_liveportrait(files: Mapping[str, Path], device="cpu",
                      dtype: torch.dtype = torch.float32) -> LivePortraitNetworks:
    """``files``: NETWORK_FILES name → its ``.pth`` or ``.safetensors`` path."""
    missing = [name for name in NETWORK_FILES if name not in files]
    if missing:
        raise KeyError(f"LivePortrait files not given: {missing}")
    stitching, lip, eye = load_stitching_retargeting(files["stitching_retargeting_module"], device, dtype)
    return LivePortraitNetworks(
        appearance=load_appearance_feature_extractor(files["appearance_feature_extractor"], device, dtype),
        motion=load_motion_extractor(files["motion_extractor"], device, dtype),
        warping=load_warping_module(files["warping_module"], device, dtype),
        spade=load_spade_generator(files["spade_generator"], device, dtype),
        stitching=stitching,
        lip=lip,
        eye=eye,
    )
