"""Single-file SDXL loading offline: a tiny checkpoint in the original (ldm) layout, written from a
known diffusers pipeline, comes back through ``from_single_file`` with every tensor in place."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.common.sdxl_checkpoint import fuse_lora, load_single_file
from pipelines.common.tiny_sdxl import (
    build_tiny_inpaint_pipeline,
    lightning_lora_state,
    write_single_file_sdxl,
    write_tokenizer,
)

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdxl")
    pipe = build_tiny_inpaint_pipeline(seed=3)
    config_dir = root / "stable-diffusion-xl-base-1.0"
    pipe.save_pretrained(str(config_dir), safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):
        write_tokenizer(config_dir / sub)
    index = json.loads((config_dir / "model_index.json").read_text())
    index["tokenizer"] = index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    (config_dir / "model_index.json").write_text(json.dumps(index))
    checkpoint = root / "checkpoint.safetensors"
    write_single_file_sdxl(checkpoint, pipe, dtype=torch.float32)
    return pipe, checkpoint, config_dir


def test_single_file_round_trip(written):
    pipe, checkpoint, config_dir = written
    loaded = load_single_file(checkpoint, config_dir)
    for name in COMPONENTS:
        want, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert set(want) == set(got), name
        for key in want:
            torch.testing.assert_close(got[key], want[key], msg=f"{name}.{key}")


def test_fused_lora_changes_the_unet_and_leaves_no_adapter(written, tmp_path: Path):
    from safetensors.torch import save_file

    _, checkpoint, config_dir = written
    loaded = load_single_file(checkpoint, config_dir)
    before = {k: v.clone() for k, v in loaded.unet.state_dict().items()}
    lora = tmp_path / "lora.safetensors"
    save_file(lightning_lora_state(loaded.unet, seed=1), str(lora))
    fuse_lora(loaded, lora)
    after = loaded.unet.state_dict()
    assert set(after) == set(before)
    changed = [k for k in before if "to_q" in k and (after[k] - before[k]).abs().max() > 1e-6]
    assert changed
    assert not loaded.get_list_adapters()
