"""The one way a pipeline finds its files: manifest ids -> installed paths, licence policy applied."""
from __future__ import annotations

from pathlib import Path

from pipelines.base import LoadOptions
from pipelines.weights.manifest import load_manifest, require
from pipelines.weights.policy import check_licences, component_report


def locate_components(slug: str, entry_ids: list[str], options: LoadOptions) -> tuple[dict[str, Path], list[dict]]:
    """Installed paths of ``entry_ids`` and their /ready report.

    Raises LicenceRefused before anything is read when a non-commercial file is not allowed,
    and WeightsMissing naming every absent file.
    """
    manifest = load_manifest()
    entries = [manifest[i] for i in entry_ids]
    check_licences(entries, options.allow_noncommercial)
    paths = require(options.weights_dir, entry_ids, pipeline=slug, manifest=manifest)
    return paths, component_report(entries)


def torch_dtype(name: str, device: str):
    """fp16/bf16 only on CUDA; CPU always computes in float32."""
    import torch

    if not device.startswith("cuda"):
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
