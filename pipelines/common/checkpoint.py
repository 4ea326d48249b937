"""Reading official checkpoint files into modules, strictly.

Conventions every loader follows:
* ``config_for(path, official)``: the official constructor arguments, unless a tiny checkpoint
  (``weights/tiny/``) carries its small configuration beside it as ``<file>.config.json``.
* ``load_strict``: no missing and no unexpected key, and every shape equal; the error names them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn


def config_sidecar(path: Path) -> Path:
    return Path(str(path) + ".config.json")


def config_for(path: Path, official: Mapping) -> dict:
    """Constructor arguments for the checkpoint at ``path``: its sidecar's, else the official ones."""
    sidecar = config_sidecar(Path(path))
    if sidecar.exists():
        return json.loads(sidecar.read_text())
    return json.loads(json.dumps(official))


def write_config_sidecar(path: Path, config: Mapping) -> None:
    config_sidecar(Path(path)).write_text(json.dumps(config, indent=1, sort_keys=True))


def read_state_file(path: Path) -> dict:
    """A ``.safetensors`` file, or a torch pickle read with ``weights_only`` (no code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def with_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def fold_spectral_norm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each ``weight_orig``/``weight_u``/``weight_v`` triple by the eval-mode weight.

    torch's spectral norm in eval mode uses ``weight_orig / sigma`` with
    ``sigma = u . (W v)`` from the stored u and v, without a power iteration
    (shared/parity/README.md §2); computing it once here leaves plain convolutions. The fold runs
    in float64 and rounds once: a float32 dot product's summation order depends on the CPU's SIMD
    path and the tensor's alignment, which made a .pth and a .safetensors load 1 ulp apart.
    """
    out = {}
    for key, value in state.items():
        if key.endswith("weight_orig"):
            prefix = key[: -len("weight_orig")]
            w = value.double()
            u = state[prefix + "weight_u"].double()
            v = state[prefix + "weight_v"].double()
            sigma = torch.dot(u, torch.mv(w.reshape(w.shape[0], -1), v))
            out[prefix + "weight"] = (w / sigma).to(value.dtype)
        elif key.endswith("weight_u") or key.endswith("weight_v"):
            continue
        else:
            out[key] = value
    return out


def to_tensors(state: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    """numpy arrays as tensors; ``np.array`` keeps 0-d arrays 0-d (BatchNorm's ``num_batches_tracked``)."""
    return {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v, order="C"))
            for k, v in state.items()}


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """Load ``state`` into ``module`` requiring the exact key set and shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"{what}: checkpoint does not match the network: missing {missing[:5]}"
            f"{'…' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'…' if len(unexpected) > 5 else ''}, wrong shape {wrong[:5]}"
        )
    module.load_state_dict(state, strict=True)
    return module.eval()
