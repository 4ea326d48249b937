"""Weights directories for ``scripts/bench.py``: the tiny profile, and full size with deterministic weights.

``full``: every learned torch module at its OFFICIAL configuration, in its OFFICIAL file format and
key layout (shared/parity/README.md §6), filled by the parity weight rule (``detweights.py``, read
from the shared folder at run time) applied to the module manifests of shared/parity. The timings
of a network depend on its shapes, not its values, so these files time like the real ones. Files
that have no full-size deterministic source here (the insightface ONNX files, the SDXL parts, the
3-D mean-face ``.mat``) come from the tiny profile, and ``BENCH_WEIGHTS.json`` in the directory says
which are which.

Both directories are built once and kept under the cache folder (``$FACEFOUNDRY_BENCH_CACHE``, else
``~/.cache/facefoundry-bench``); a file is written to a temporary name and renamed, so an
interrupted build leaves no half file behind.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Mapping

import torch

from pipelines.common.checkpoint import config_sidecar, to_tensors
from pipelines.weights import PROFILE_FILE
from pipelines.weights.manifest import load_manifest
from pipelines.weights.tiny import write_tiny_profile

REPO = Path(__file__).resolve().parents[1]
BENCH_SLUGS = ("expression-editor", "faceswap-v4", "sadtalker")
# Weight seed of the full profile (any seed times the same; 0 is the one every fixture folder has).
WEIGHT_SEED = 0
MARKER = "BENCH_WEIGHTS.json"


def cache_root() -> Path:
    return Path(os.environ.get("FACEFOUNDRY_BENCH_CACHE", Path.home() / ".cache" / "facefoundry-bench"))


def parity_dir() -> Path:
    """shared/parity, found like tests/parity/fixtures.py finds it (``$FACEFOUNDRY_SHARED`` or ../shared)."""
    return Path(os.environ.get("FACEFOUNDRY_SHARED", REPO.parent / "shared")) / "parity"


def detweights():
    """The shared weight rule, imported from where it lies (never copied into the project)."""
    path = parity_dir() / "detweights.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: set FACEFOUNDRY_SHARED to the shared folder")
    spec = importlib.util.spec_from_file_location("detweights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module_state(manifest: str) -> dict[str, torch.Tensor]:
    """Deterministic tensors for ``<parity>/<manifest>.manifest.json`` under the upstream key names."""
    keys = json.loads((parity_dir() / f"{manifest}.manifest.json").read_text())
    return to_tensors(detweights().state_dict_for(keys, WEIGHT_SEED))


def _save_torch(payload, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, str(partial))
    partial.replace(path)


def _save_safetensors(state: Mapping[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    partial = path.with_name(path.name + ".partial")
    save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
    partial.replace(path)


def plain(manifest: str) -> Callable[[Path], None]:
    """A plain state dict (LivePortrait base models, ParseNet, RetinaFace)."""
    return lambda path: _save_torch(module_state(manifest), path)


def nested(manifest: str, entry: str) -> Callable[[Path], None]:
    """The state dict under one key of a dict (GFPGAN ``params_ema``, FAN ``state_dict``, ``mapping``)."""
    return lambda path: _save_torch({entry: module_state(manifest)}, path)


def stitching(path: Path) -> None:
    """The KwaiVGI stitching file: three DDP state dicts (``module.`` keys) under their entries."""
    entries = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
    _save_torch({entry: {f"module.{k}": v for k, v in
                         module_state(f"liveportrait/stitching_retargeting_module.{mlp}").items()}
                 for mlp, entry in entries.items()}, path)


def sadtalker_bundle(path: Path) -> None:
    """``SadTalker_V0.0.2_{256,512}.safetensors``: one layout with prefixes for both sizes (§6)."""
    _save_safetensors(module_state("sadtalker/sadtalker_bundle"), path)


def yolo_checkpoint(path: Path) -> None:
    """The fixture's ultralytics-format ``.pt`` is a full-size face_yolov8n with deterministic weights."""
    partial = path.with_name(path.name + ".partial")
    shutil.copyfile(parity_dir() / "yolov8_face" / f"yolov8_face.seed{WEIGHT_SEED}.pt", partial)
    partial.replace(path)


# Manifest id -> writer of its full-size deterministic file (parity/README.md §6 for each layout).
FULL_SIZE_WRITERS: dict[str, Callable[[Path], None]] = {
    "liveportrait.appearance_feature_extractor": plain("liveportrait/appearance_feature_extractor"),
    "liveportrait.motion_extractor": plain("liveportrait/motion_extractor"),
    "liveportrait.warping_module": plain("liveportrait/warping_module"),
    "liveportrait.spade_generator": plain("liveportrait/spade_generator"),
    "liveportrait.stitching_retargeting_module": stitching,
    "yolov8n_face": yolo_checkpoint,
    "gfpgan_v1.4": nested("sadtalker/gfpgan", "params_ema"),
    "facexlib.parsenet": plain("sadtalker/parsenet"),
    "facexlib.retinaface_r50": plain("sadtalker/retinaface"),
    "facexlib.awing_fan": nested("sadtalker/fan_awing", "state_dict"),
    "sadtalker.bundle_256": sadtalker_bundle,
    "sadtalker.bundle_512": sadtalker_bundle,
    "sadtalker.mapping_00229": nested("sadtalker/mapping_crop", "mapping"),
    "sadtalker.mapping_00109": nested("sadtalker/mapping_full", "mapping"),
}


def tiny_weights_dir(root: Path | None = None) -> Path:
    """The tiny profile for the three benchmarked endpoints, written once."""
    dest = (root or cache_root()) / "tiny"
    marker = dest / PROFILE_FILE
    if not marker.is_file() or set(json.loads(marker.read_text())["pipelines"]) != set(BENCH_SLUGS):
        write_tiny_profile(dest, list(BENCH_SLUGS))
    return dest


def full_weights_dir(slug: str, root: Path | None = None) -> Path:
    """Full size, deterministic weights, for ``slug`` (other endpoints' files are added when benched)."""
    root = root or cache_root()
    tiny = tiny_weights_dir(root)
    dest = root / f"full-seed{WEIGHT_SEED}"
    manifest = load_manifest()
    entries = [e for e in manifest.for_pipeline(slug) if (tiny / e.dest).is_file() or e.id in FULL_SIZE_WRITERS]
    record_path = dest / MARKER
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"full": [], "tiny": []}
    for entry in entries:
        path = dest / entry.dest
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = FULL_SIZE_WRITERS.get(entry.id)
        if writer is not None:
            if not path.is_file():
                print(f"bench: writing {entry.dest} (official size, deterministic weights)", flush=True)
                writer(path)
            _add(record["full"], entry.id)
        elif not path.is_file():
            # Hard links (or copies across devices) of the tiny file with its small-config sidecar.
            for source in (tiny / entry.dest, config_sidecar(tiny / entry.dest)):
                if source.is_file():
                    _link(source, dest / source.relative_to(tiny))
            _add(record["tiny"], entry.id)
        else:
            _add(record["tiny"], entry.id)
    record["rule"] = "shared/parity/detweights.py v2"
    record["seed"] = WEIGHT_SEED
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True))
    return dest


def profile_files(weights_dir: Path, slug: str) -> dict[str, str]:
    """Manifest id -> "full (deterministic)", "tiny" or "installed" for the files ``slug`` finds in
    ``weights_dir`` (a bench-built full directory, a tiny profile, or real downloaded weights)."""
    present = [e.id for e in load_manifest().for_pipeline(slug) if (weights_dir / e.dest).is_file()]
    marker = weights_dir / MARKER
    if marker.is_file():
        full = set(json.loads(marker.read_text())["full"])
        return {i: "full (deterministic)" if i in full else "tiny" for i in present}
    label = "tiny" if (weights_dir / PROFILE_FILE).is_file() else "installed"
    return {i: label for i in present}


def _add(ids: list, entry_id: str) -> None:
    if entry_id not in ids:
        ids.append(entry_id)


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)

