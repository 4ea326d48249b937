"""Weights directories for ``scripts/bench.py``: the tiny profile, and full size with deterministic weights.

``full``: every learned torch module at its OFFICIAL configuration, in its OFFICIAL file format and
key layout (shared/parity/README.md §6), filled by the parity weight rule (``detweights.py``, read
from the shared folder at run time) applied to the module manifests of shared/parity. The timings
of a network depend on its shapes, not its values, so these files time like the real ones. With
``full_sdxl`` the SDXL base folder and the Lightning LoRA are written at SDXL's real configurations
with seeded random weights (``write_full_sdxl``, about 7 GB; meant for a GPU run). Files that have no
full-size source here (the insightface ONNX files, the 3-D mean-face ``.mat``, and the SDXL parts
without ``full_sdxl``) come from the tiny profile, and ``BENCH_WEIGHTS.json`` in the directory says
which are which.

The weight rule and the manifests are read from shared/parity; for a machine that has only the
repo (a GPU lease), ``python scripts/bench_weights.py pack DIR`` copies the 6.5 MB of it that the
full profile reads into ``DIR``, and ``FACEFOUNDRY_SHARED=DIR`` points the bench there.

Both directories are built once and kept under the cache folder (``$FACEFOUNDRY_BENCH_CACHE``, else
``~/.cache/facefoundry-bench``); a file is written to a temporary name and renamed, so an
interrupted build leaves no half file behind.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Mapping

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repo's packages

from pipelines import registry  # noqa: E402
from pipelines.common.checkpoint import config_sidecar, to_tensors  # noqa: E402
from pipelines.common.tiny_sdxl import lightning_lora_state, write_tokenizer  # noqa: E402
from pipelines.weights import PROFILE_FILE  # noqa: E402
from pipelines.weights.manifest import load_manifest  # noqa: E402
from pipelines.weights.tiny import write_tiny_profile  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
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


# stabilityai/stable-diffusion-xl-base-1.0's component configurations (its unet/, vae/, text_encoder/,
# text_encoder_2/ and scheduler/ config files): CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text encoders.
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SDXL_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 1024,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.13025, "force_upcast": True,
}
SDXL_TEXT_ENCODER = {
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
    "hidden_act": "quick_gelu", "projection_dim": 768, "vocab_size": 49408, "max_position_embeddings": 77,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
SDXL_TEXT_ENCODER_2 = {
    **SDXL_TEXT_ENCODER, "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
    "num_hidden_layers": 32, "hidden_act": "gelu", "projection_dim": 1280,
}
SDXL_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading", "interpolation_type": "linear",
}
# SDXL-Lightning's LoRA rank is not recorded here; a LoRA adds two thin matmuls per projection, a small
# part of the UNet's time at any rank up to this one.
LIGHTNING_RANK = 64
SDXL_FOLDER = "sdxl.base."
SDXL_LORA = "sdxl.lightning_8step_lora"
# Endpoints whose SDXL files all have full-size writers. face-to-sticker and consistent-character
# read SDXL's config folder for their single-file checkpoints, which have none: a full-size config
# beside a tiny checkpoint would not load, so they keep the tiny SDXL.
FULL_SDXL_SLUGS = ("faceswap-v4",)


def write_full_sdxl(model_dir: Path, lora_path: Path, device: str = "cpu") -> None:
    """The SDXL base folder (fp16 variant files, as the manifest installs them) and a Lightning LoRA
    in kohya layout, at the real configurations with seeded random weights. Built on ``device``
    (initialising 3.5 B parameters is much faster on a GPU), written through a temporary folder."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(WEIGHT_SEED)
    with torch.device(device):
        pipe = StableDiffusionXLInpaintPipeline(
            vae=AutoencoderKL(**SDXL_VAE), unet=UNet2DConditionModel(**SDXL_UNET),
            text_encoder=CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_ENCODER)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_ENCODER_2)),
            tokenizer=None, tokenizer_2=None, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER))
    partial = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(str(partial), safe_serialization=True, variant="fp16")
    for sub in ("tokenizer", "tokenizer_2"):
        write_tokenizer(partial / sub)
    index = json.loads((partial / "model_index.json").read_text())
    index["tokenizer"] = index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    (partial / "model_index.json").write_text(json.dumps(index, indent=2))
    shutil.rmtree(model_dir, ignore_errors=True)
    partial.replace(model_dir)
    lora_path.parent.mkdir(parents=True, exist_ok=True)
    lora_partial = lora_path.with_name(lora_path.name + ".partial")
    save_file({k: v.to(torch.float16).contiguous().cpu() for k, v in
               lightning_lora_state(pipe.unet, rank=LIGHTNING_RANK, seed=WEIGHT_SEED).items()}, str(lora_partial))
    lora_partial.replace(lora_path)


def is_sdxl(entry_id: str) -> bool:
    return entry_id.startswith(SDXL_FOLDER) or entry_id == SDXL_LORA


def tiny_weights_dir(root: Path | None = None, slugs: list[str] | None = None) -> Path:
    """The tiny profile for ``slugs`` (default: every built endpoint), written once."""
    slugs = registry.built_slugs() if slugs is None else slugs
    dest = (root or cache_root()) / "tiny"
    marker = dest / PROFILE_FILE
    if not marker.is_file() or not set(slugs) <= set(json.loads(marker.read_text())["pipelines"]):
        write_tiny_profile(dest, list(slugs))
    return dest


def full_weights_dir(slug: str, root: Path | None = None, full_sdxl: bool = False, device: str = "cpu") -> Path:
    """Full size, deterministic weights, for ``slug`` (other endpoints' files are added when benched);
    ``full_sdxl``: SDXL at its real size too (a directory of its own, built on ``device``) for the
    endpoints in ``FULL_SDXL_SLUGS``."""
    full_sdxl = full_sdxl and slug in FULL_SDXL_SLUGS
    root = root or cache_root()
    tiny = tiny_weights_dir(root)
    dest = root / f"full-seed{WEIGHT_SEED}{'-sdxl' if full_sdxl else ''}"
    manifest = load_manifest()
    entries = [e for e in manifest.for_pipeline(slug) if (tiny / e.dest).is_file() or e.id in FULL_SIZE_WRITERS]
    record_path = dest / MARKER
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"full": [], "tiny": []}
    sdxl = {e.id: e for e in entries if is_sdxl(e.id)} if full_sdxl else {}
    if sdxl and not all((dest / e.dest).is_file() for e in sdxl.values()):
        print(f"bench: writing SDXL base and the Lightning LoRA (real configs, random weights, on {device})",
              flush=True)
        write_full_sdxl((dest / manifest[SDXL_FOLDER + "model_index"].dest).parent, dest / manifest[SDXL_LORA].dest,
                        device)
    for entry in entries:
        path = dest / entry.dest
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = FULL_SIZE_WRITERS.get(entry.id)
        if entry.id in sdxl:
            _add(record.setdefault("full_random", []), entry.id)
        elif writer is not None:
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
    """Manifest id -> "full (deterministic)", "full (seeded random)", "tiny" or "installed" for the files
    ``slug`` finds in ``weights_dir`` (a bench-built full directory, a tiny profile, or real weights)."""
    present = [e.id for e in load_manifest().for_pipeline(slug) if (weights_dir / e.dest).is_file()]
    marker = weights_dir / MARKER
    if marker.is_file():
        record = json.loads(marker.read_text())
        full, random = set(record["full"]), set(record.get("full_random", []))
        return {i: "full (deterministic)" if i in full else "full (seeded random)" if i in random else "tiny"
                for i in present}
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



# What the full profile reads from shared/parity: the weight rule, the module manifests and the
# ultralytics-format YOLO file.
PACKED = ("detweights.py", "liveportrait/*.manifest.json", "sadtalker/*.manifest.json",
          f"yolov8_face/yolov8_face.seed{WEIGHT_SEED}.pt")


def pack_shared(dest: Path) -> list[Path]:
    """Copy the ``PACKED`` files of shared/parity to ``dest``/parity (same layout); returns them."""
    source, copied = parity_dir(), []
    for pattern in PACKED:
        for path in sorted(source.glob(pattern)):
            target = dest / "parity" / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied.append(target)
    return copied


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_weights.py", description="Prepare the benchmark's weight sources.")
    p.add_argument("command", choices=["pack"], help="pack: copy what the full profile reads from shared/parity")
    p.add_argument("dest", type=Path)
    args = p.parse_args(argv)
    copied = pack_shared(args.dest)
    print(f"copied {len(copied)} files ({sum(c.stat().st_size for c in copied) / 2**20:.1f} MB) to {args.dest}; "
          f"run the bench with FACEFOUNDRY_SHARED={args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
