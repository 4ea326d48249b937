"""Official checkpoint files -> face-renderer networks, strictly (spec §4.2, §4.5).

* ``SadTalker_V0.0.2_{256,512}.safetensors``: KPDetector under ``kp_extractor.`` (its Gaussian
  ``down.weight`` included) and the generator under ``generator.`` (18 spectral-norm convs stored
  as ``weight_orig``/``weight_u``/``weight_v``, folded here). Only keys starting with the prefix
  are taken; every one of them must be consumed.

SadTalker's inference never runs face-vid2vid's HEEstimator (MappingNet replaces it, spec §3.7),
so its legacy checkpoint is not read.

A tiny bundle carries ``<bundle>.config.json`` = ``{prefix: config}`` (``config_for``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.checkpoint import config_for, fold_spectral_norm, load_strict

from .coeff_loader import Bundle, read_bundle
from .generator import OcclusionAwareSPADEGenerator
from .kp_detector import KPDetector
from .render_config import GENERATOR_PREFIX, KP_DETECTOR_PREFIX, OFFICIAL_BY_PREFIX


@dataclass
class RenderNetworks:
    kp_detector: KPDetector
    generator: OcclusionAwareSPADEGenerator


def load_kp_detector(bundle_path: Path, bundle: Bundle | None = None) -> KPDetector:
    """KPDetector from the bundle (``down.weight`` is loaded like any weight); pass ``bundle``
    (from ``read_bundle``) when the file has been read already."""
    bundle = read_bundle(bundle_path) if bundle is None else bundle
    config = config_for(bundle_path, OFFICIAL_BY_PREFIX)[KP_DETECTOR_PREFIX]
    return load_strict(KPDetector(**config), bundle.get(KP_DETECTOR_PREFIX, {}),
                       f"{Path(bundle_path).name} [{KP_DETECTOR_PREFIX}*]")


def load_generator(bundle_path: Path, bundle: Bundle | None = None) -> OcclusionAwareSPADEGenerator:
    """Generator from the bundle, spectral norm folded as ``W_orig / (u . W_orig v)`` from the stored u, v."""
    bundle = read_bundle(bundle_path) if bundle is None else bundle
    config = config_for(bundle_path, OFFICIAL_BY_PREFIX)[GENERATOR_PREFIX]
    return load_strict(OcclusionAwareSPADEGenerator(**config), fold_spectral_norm(bundle.get(GENERATOR_PREFIX, {})),
                       f"{Path(bundle_path).name} [{GENERATOR_PREFIX}*]")


def load_render_networks(bundle_path: Path, bundle: Bundle | None = None,
                         device: str | torch.device = "cpu") -> RenderNetworks:
    """KPDetector and generator, in eval mode on ``device``, reading the file at most once."""
    bundle = read_bundle(bundle_path) if bundle is None else bundle
    return RenderNetworks(kp_detector=load_kp_detector(bundle_path, bundle).to(device),
                          generator=load_generator(bundle_path, bundle).to(device))
