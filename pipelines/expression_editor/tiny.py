"""Tiny LivePortrait checkpoints in the official file formats, for CPU tests in seconds.

The production classes are built at small widths and randomly initialised, then written with the
official key layout and nesting (spec §3.1, §3.2), SPADE spectral-norm buffers included, plus a
``<file>.config.json`` sidecar that the loader reads instead of the official configuration.
Everything that the node math relies on keeps its official value: 21 keypoints, 66 pose bins,
256² input, the 64² feature grid and the 512² output. The depth of the feature volume is cut to 2
(16 officially); the layer counts stay official, so the key sets equal the official ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from pipelines.common.checkpoint import write_config_sidecar
from pipelines.weights.manifest import load_manifest

from .appearance_feature_extractor import AppearanceFeatureExtractor
from .loader import DDP_PREFIX, STITCHING_ENTRIES
from .motion_extractor import MotionExtractor
from .spade_generator import SPECTRAL_NORM_CONVS, SPADEDecoder
from .stitching_retargeting_network import StitchingRetargetingNetwork
from pipelines.common.tiny_yolo import write_tiny_yolo
from .warping_network import WarpingNetwork

TINY_CONFIGS = {
    "appearance_feature_extractor": {
        "image_channel": 3, "block_expansion": 8, "num_down_blocks": 2, "max_features": 16,
        "reshape_channel": 8, "reshape_depth": 2, "num_resblocks": 6,
    },
    "motion_extractor": {"num_kp": 21, "depths": [3, 3, 9, 3], "dims": [8, 16, 32, 64], "num_bins": 66},
    "warping_module": {
        "num_kp": 21, "block_expansion": 4, "max_features": 16, "num_down_blocks": 2,
        "reshape_channel": 8, "estimate_occlusion_map": True,
        "dense_motion_params": {
            "block_expansion": 2, "max_features": 8, "num_blocks": 5, "reshape_depth": 2, "compress": 1,
        },
    },
    "spade_generator": {
        "upscale": 2, "block_expansion": 4, "max_features": 16, "num_down_blocks": 2,
        "out_channels": 8, "spade_hidden": 8,
    },
    "stitching_retargeting_module": {
        "stitching": {"input_size": 126, "hidden_sizes": [16, 16, 8], "output_size": 65},
        "lip": {"input_size": 65, "hidden_sizes": [16, 16, 8], "output_size": 63},
        "eye": {"input_size": 66, "hidden_sizes": [16, 16, 8, 8, 8], "output_size": 63},
    },
}

CLASSES = {
    "appearance_feature_extractor": AppearanceFeatureExtractor,
    "motion_extractor": MotionExtractor,
    "warping_module": WarpingNetwork,
    "spade_generator": SPADEDecoder,
}

# Where each file lies in the two official layouts (§3.1 KwaiVGI, §3.2 Kijai/ComfyUI).
PTH_PATHS = {
    "appearance_feature_extractor": "liveportrait/base_models/appearance_feature_extractor.pth",
    "motion_extractor": "liveportrait/base_models/motion_extractor.pth",
    "warping_module": "liveportrait/base_models/warping_module.pth",
    "spade_generator": "liveportrait/base_models/spade_generator.pth",
    "stitching_retargeting_module": "liveportrait/retargeting_models/stitching_retargeting_module.pth",
}
SAFETENSORS_PATHS = {name: f"liveportrait/{name}.safetensors" for name in PTH_PATHS}

POWER_ITERATIONS = 30


def write_state_file(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """A plain state dict as ``.safetensors`` or as a torch pickle, by suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, str(path))


def write_stitching_file(states: Mapping[str, Mapping[str, torch.Tensor]], path: Path) -> None:
    """MLP name → state dict, nested (``.pth``) or flattened (``.safetensors``) as upstream ships it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        write_state_file({f"{STITCHING_ENTRIES[name]}_module.{k}": v
                          for name, state in states.items() for k, v in state.items()}, path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({STITCHING_ENTRIES[name]: {DDP_PREFIX + k: v.detach().contiguous() for k, v in state.items()}
                for name, state in states.items()}, str(path))


def spectral_norm_vectors(weight: torch.Tensor, generator: torch.Generator,
                          iterations: int = POWER_ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, v) of torch's spectral norm for ``weight``, converged by power iteration in float64,
    so that σ = u·(W v) is close to the top singular value as in a trained checkpoint."""
    w = weight.reshape(weight.shape[0], -1).double()
    v = torch.randn(w.shape[1], generator=generator, dtype=torch.float64)
    v = v / v.norm().clamp_min(1e-12)
    for _ in range(iterations):
        u = w @ v
        u = u / u.norm().clamp_min(1e-12)
        v = w.T @ u
        v = v / v.norm().clamp_min(1e-12)
    u = w @ v
    u = u / u.norm().clamp_min(1e-12)
    return u.to(weight.dtype), v.to(weight.dtype)


def with_spectral_norm_buffers(state: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict:
    """Each spectral-norm conv's ``weight`` → ``weight_orig``, ``weight_u``, ``weight_v`` (§2.4)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[-1] == "weight" and len(parts) > 1 and parts[-2] in SPECTRAL_NORM_CONVS:
            prefix = key[: -len("weight")]
            u, v = spectral_norm_vectors(value, generator)
            out[prefix + "weight_orig"] = value
            out[prefix + "weight_u"] = u
            out[prefix + "weight_v"] = v
        else:
            out[key] = value
    return out


def write_tiny_liveportrait(dest_dir: Path, fmt: str = "pth", seed: int = 0) -> dict[str, Path]:
    """Write the five tiny files under ``dest_dir`` in the KwaiVGI (``fmt="pth"``) or Kijai
    (``fmt="safetensors"``) layout; returns the ``files`` mapping for ``load_liveportrait``."""
    paths = {"pth": PTH_PATHS, "safetensors": SAFETENSORS_PATHS}[fmt]
    generator = torch.Generator().manual_seed(seed)
    # Module init draws from the global generator; seed it without disturbing the caller's stream.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _write_tiny_files(Path(dest_dir), paths, generator)


def _write_tiny_files(dest_dir: Path, paths: Mapping[str, str], generator: torch.Generator) -> dict[str, Path]:
    files = {}
    for name, cls in CLASSES.items():
        path = dest_dir / paths[name]
        state = cls(**TINY_CONFIGS[name]).state_dict()
        if cls is SPADEDecoder:
            state = with_spectral_norm_buffers(state, generator)
        write_state_file(state, path)
        write_config_sidecar(path, TINY_CONFIGS[name])
        files[name] = path
    name = "stitching_retargeting_module"
    path = dest_dir / paths[name]
    write_stitching_file({mlp: StitchingRetargetingNetwork(**cfg).state_dict()
                          for mlp, cfg in TINY_CONFIGS[name].items()}, path)
    write_config_sidecar(path, TINY_CONFIGS[name])
    files[name] = path
    return files


def write_tiny(dest: Path) -> None:
    """Tiny-profile hook (pipelines/weights/tiny.py): the expression editor's files at their
    manifest paths: the five networks in the KwaiVGI layout and the YOLOv8n face detector."""
    write_tiny_liveportrait(Path(dest), "pth")
    write_tiny_yolo(Path(dest) / load_manifest()["yolov8n_face"].dest)
