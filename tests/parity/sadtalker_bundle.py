"""``SadTalker_V0.0.2_{256,512}.safetensors`` built for parity from the official key layout.

Each module's prefix inside the bundle is read off ``sadtalker/sadtalker_bundle.manifest.json``
(parity README §5.3: the per-module manifests are its slices with the prefix removed), never from
the loaders' own prefix constants, so a loader with a wrong prefix cannot pass its parity test.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from tests.parity.fixtures import sidecar, torch_state_dict_for

BUNDLE = "sadtalker_bundle"


def bundle_layout(fixture: Path) -> dict[str, dict]:
    """The bundle's key -> {shape, dtype} as the official file holds it."""
    return sidecar(fixture, BUNDLE, "manifest.json")


def bundle_prefix(layout: dict[str, dict], module_keys: set[str]) -> str:
    """The one prefix under which the bundle holds exactly ``module_keys``."""
    candidates = {k[: -len(key)] for key in module_keys for k in layout if k.endswith("." + key)}
    found = [p for p in candidates if {k[len(p):] for k in layout if k.startswith(p)} == module_keys]
    assert len(found) == 1, f"the bundle holds these keys under {len(found)} prefixes: {sorted(found)}"
    return found[0]


def write_sadtalker_bundle(path: Path, fixture: Path, modules: list[str],
                           state_of: Callable[[Path, str], dict[str, torch.Tensor]] = torch_state_dict_for) -> Path:
    """The fixture's weights of ``modules`` at their official keys, plus one tensor of a module not
    asked for (the real bundle holds five networks: loaders must select by prefix)."""
    layout = bundle_layout(fixture)
    state, prefixes = {}, []
    for module in modules:
        weights = state_of(fixture, module)
        prefix = bundle_prefix(layout, set(weights))
        prefixes.append(prefix)
        for key, value in weights.items():
            official = layout[prefix + key]
            assert list(value.shape) == official["shape"], f"{prefix + key}: {list(value.shape)} != {official['shape']}"
            state[prefix + key] = value
    foreign = next(k for k in sorted(layout) if not any(k.startswith(p) for p in prefixes))
    spec = layout[foreign]
    state[foreign] = torch.zeros(spec["shape"], dtype=getattr(torch, spec["dtype"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
