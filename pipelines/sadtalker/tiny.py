"""SadTalker's tiny-profile hook (pipelines/weights/tiny.py): small random files in the official layout.

Writes, at their manifest ``dest`` paths under ``dest``: both bundles
``SadTalker_V0.0.2_{256,512}.safetensors`` (all five prefixes, one ``<bundle>.config.json`` sidecar
``{prefix: config}``), the two MappingNet ``.pth.tar`` files and ``similarity_Lm3D_all.mat``.
GFPGAN, ParseNet, RetinaFace and the FAN are shared files, written by ``pipelines.common.tiny``.
"""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from ..common.checkpoint import write_config_sidecar
from ..weights.manifest import load_manifest
from .tiny_coeff import tiny_coeff_state, write_tiny_mapping
from .tiny_render import tiny_render_state, write_tiny_lm3d

BUNDLE_IDS = {256: "sadtalker.bundle_256", 512: "sadtalker.bundle_512"}
LM3D_ID = "sadtalker.similarity_lm3d_all"


def write_tiny_bundle(path: Path, seed: int) -> Path:
    """One bundle safetensors: every network's state under its prefix, their configs in the sidecar."""
    networks = {**tiny_coeff_state(seed), **tiny_render_state(seed)}
    tensors = {prefix + key: value.contiguous() for prefix, (state, _) in networks.items()
               for key, value in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    write_config_sidecar(path, {prefix: config for prefix, (_, config) in networks.items()})
    return path


def write_tiny(dest: Path) -> None:
    """The hook. The two bundles get different seeds, as the official 256 and 512 files differ."""
    dest = Path(dest)
    manifest = load_manifest()
    for seed, entry in enumerate(BUNDLE_IDS.values()):
        write_tiny_bundle(dest / manifest[entry].dest, seed)
    write_tiny_mapping(dest)
    # The real file is MAT v5 with ``lm`` (68 x 3); synthetic mean-face values stand in (§4.1).
    write_tiny_lm3d(dest / manifest[LM3D_ID].dest)
