"""Official SadTalker files -> the audio/coefficient networks, strictly (spec §3.1, §4.2).

* ``SadTalker_V0.0.2_{256,512}.safetensors``: one bundle; each network's keys sit under its
  prefix (``audio2exp.``, ``audio2pose.``, ``face_3drecon.``; the renderer's prefixes belong to
  ``render_config.py``). A tiny bundle carries ``<bundle>.config.json`` = {prefix: config}.
* ``mapping_00229-model.pth.tar`` (70-d) / ``mapping_00109-model.pth.tar`` (73-d): dict key ``mapping``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.checkpoint import config_for, load_strict, read_state_file, with_prefix
from .audio2exp import ExpNet
from .audio2pose import PoseVAE
from .config import (AUDIO2EXP, AUDIO2EXP_PREFIX, AUDIO2POSE, AUDIO2POSE_PREFIX, MAPPING_CROP, MAPPING_CROP_FILE,
                     MAPPING_FULL, MAPPING_FULL_FILE, MAPPING_KEY, NET_RECON, NET_RECON_PREFIX)
from .mapping_net import MappingNet
from .net_recon import ReconNet

OFFICIAL_BY_PREFIX = {AUDIO2EXP_PREFIX: AUDIO2EXP, AUDIO2POSE_PREFIX: AUDIO2POSE, NET_RECON_PREFIX: NET_RECON}

Bundle = dict[str, dict[str, torch.Tensor]]


def read_bundle(path: Path) -> Bundle:
    """Every network in the bundle: {prefix: its state dict with the prefix removed}."""
    state = read_state_file(path)
    prefixes = sorted({key.split(".", 1)[0] + "." for key in state})
    return {prefix: with_prefix(state, prefix) for prefix in prefixes}


def bundle_config(path: Path, prefix: str) -> dict:
    """The constructor arguments of the network under ``prefix``: the sidecar's, else the official ones."""
    return config_for(path, OFFICIAL_BY_PREFIX)[prefix]


def _load_from_bundle(path: Path, prefix: str, build, bundle: Bundle | None):
    bundle = read_bundle(path) if bundle is None else bundle
    module = build(**bundle_config(path, prefix))
    return load_strict(module, bundle.get(prefix, {}), f"{Path(path).name} [{prefix}*]")


def load_expnet(path: Path, bundle: Bundle | None = None) -> ExpNet:
    """ExpNet from the bundle; pass ``bundle`` (from ``read_bundle``) to read the file only once."""
    return _load_from_bundle(path, AUDIO2EXP_PREFIX, ExpNet, bundle)


def load_pose_vae(path: Path, bundle: Bundle | None = None) -> PoseVAE:
    """PoseVAE from the bundle, including its training-only encoder and discriminator weights."""
    return _load_from_bundle(path, AUDIO2POSE_PREFIX, PoseVAE, bundle)


def load_recon_net(path: Path, bundle: Bundle | None = None) -> ReconNet:
    return _load_from_bundle(path, NET_RECON_PREFIX, ReconNet, bundle)


def mapping_file(full_frame: bool) -> str:
    """mapping_00109 (73-d) for full/extfull, mapping_00229 (70-d) for crop/extcrop/resize (§3.5)."""
    return MAPPING_FULL_FILE if full_frame else MAPPING_CROP_FILE


def load_mapping_net(path: Path, full_frame: bool) -> MappingNet:
    """MappingNet from a mapping ``.pth.tar``; only its ``mapping`` entry is read."""
    module = MappingNet(**config_for(path, MAPPING_FULL if full_frame else MAPPING_CROP))
    return load_strict(module, read_state_file(path)[MAPPING_KEY], f"{Path(path).name} [{MAPPING_KEY}]")


@dataclass
class CoefficientNets:
    """The bundle's audio/coefficient networks, read from one pass over the file."""

    expnet: ExpNet
    pose_vae: PoseVAE
    recon_net: ReconNet


def load_coefficient_nets(path: Path) -> CoefficientNets:
    bundle = read_bundle(path)
    return CoefficientNets(load_expnet(path, bundle), load_pose_vae(path, bundle), load_recon_net(path, bundle))
