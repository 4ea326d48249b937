"""Tiny SDXL components in diffusers' own folder layout (fp16 variant file names), for the tiny profile.

The configs are those of diffusers' SDXL tests (``get_dummy_components``): the real classes at a
small size, so ``SDXLInpainter.load`` reads them exactly as it reads the real
``stabilityai/stable-diffusion-xl-base-1.0`` folder the manifest installs. The Lightning LoRA is written in
the kohya key layout (``lora_unet_…​.lora_down.weight`` / ``lora_up`` / ``alpha``) that
``ByteDance/SDXL-Lightning``'s single-file LoRAs use.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch


def _byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet, bare and word-final, plus the two special tokens."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(dest: Path) -> None:
    """The four files of SDXL's ``tokenizer``/``tokenizer_2`` folders, with a byte-level vocabulary."""
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps(_byte_level_vocab()))
    (dest / "merges.txt").write_text("#version: 0.2\n")
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {**special, "model_max_length": 77, "do_lower_case": True, "errors": "replace",
              "tokenizer_class": "CLIPTokenizer"}
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def build_tiny_inpaint_pipeline(seed: int = 0):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, sample_size=128,
    )
    text_config = CLIPTextConfig(
        bos_token_id=514, eos_token_id=515, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=5, pad_token_id=515, vocab_size=516, hidden_act="gelu",
        projection_dim=32,
    )
    return StableDiffusionXLInpaintPipeline(
        vae=vae, text_encoder=CLIPTextModel(text_config), text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=None, tokenizer_2=None, unet=unet, scheduler=scheduler,
    )


def lightning_lora_state(unet, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A kohya-layout LoRA over every attention projection of ``unet``."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in unet.named_modules():
        is_projection = name.endswith(("to_q", "to_k", "to_v", "to_out.0"))
        if isinstance(module, torch.nn.Linear) and ".attn" in name and is_projection:
            key = "lora_unet_" + name.replace(".", "_")
            state[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.01
            state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.01
            state[f"{key}.alpha"] = torch.tensor(float(rank))
    return state


def write_tiny_sdxl(model_dir: Path, lora_path: Path, seed: int = 0) -> None:
    """Write the diffusers folder at ``model_dir`` and the Lightning LoRA file at ``lora_path``."""
    from safetensors.torch import save_file

    pipe = build_tiny_inpaint_pipeline(seed)
    pipe.save_pretrained(str(model_dir), safe_serialization=True, variant="fp16")
    for sub in ("tokenizer", "tokenizer_2"):
        write_tokenizer(model_dir / sub)
    index = json.loads((model_dir / "model_index.json").read_text())
    index["tokenizer"] = index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    (model_dir / "model_index.json").write_text(json.dumps(index, indent=2))
    lora_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lightning_lora_state(pipe.unet, seed=seed), str(lora_path))


# ---------------------------------------------------------------- InstantID / IP-Adapter plus-face files

RESAMPLER_DEPTH = 4  # diffusers' IPAdapterPlusImageProjection always has four blocks (spec §5)
RESAMPLER_DIM_HEAD = 64  # diffusers derives heads = to_q rows / 64


def resampler_state(dim: int, heads: int, num_queries: int, embedding_dim: int, output_dim: int,
                    ff_mult: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """The 51 ``image_proj`` tensors of the InstantID / plus-face ``Resampler`` (parity README §3.1)."""
    gen = torch.Generator().manual_seed(seed)
    inner = RESAMPLER_DIM_HEAD * heads

    def w(*shape):
        return torch.randn(*shape, generator=gen) / shape[-1] ** 0.5

    state = {"latents": torch.randn(1, num_queries, dim, generator=gen) / dim**0.5,
             "proj_in.weight": w(dim, embedding_dim), "proj_in.bias": torch.zeros(dim),
             "proj_out.weight": w(output_dim, dim), "proj_out.bias": torch.zeros(output_dim),
             "norm_out.weight": torch.ones(output_dim), "norm_out.bias": torch.zeros(output_dim)}
    for i in range(RESAMPLER_DEPTH):
        for norm in ("norm1", "norm2"):
            state[f"layers.{i}.0.{norm}.weight"] = torch.ones(dim)
            state[f"layers.{i}.0.{norm}.bias"] = torch.zeros(dim)
        state[f"layers.{i}.0.to_q.weight"] = w(inner, dim)
        state[f"layers.{i}.0.to_kv.weight"] = w(2 * inner, dim)
        state[f"layers.{i}.0.to_out.weight"] = w(dim, inner)
        state[f"layers.{i}.1.0.weight"] = torch.ones(dim)
        state[f"layers.{i}.1.0.bias"] = torch.zeros(dim)
        state[f"layers.{i}.1.1.weight"] = w(dim * ff_mult, dim)
        state[f"layers.{i}.1.3.weight"] = w(dim, dim * ff_mult)
    return state


def ip_adapter_attention_state(unet, seed: int = 0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``<2i+1>.to_k_ip.weight`` / ``to_v_ip.weight`` for every cross-attention layer of ``unet``,
    numbered in ``unet.attn_processors`` order as the official files are."""
    gen = torch.Generator().manual_seed(seed)
    state, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        attn = unet.get_submodule(name.removesuffix(".processor"))
        shape = (attn.to_k.out_features, attn.to_k.in_features)
        for proj in ("to_k_ip", "to_v_ip"):
            state[f"{key_id}.{proj}.weight"] = scale * torch.randn(*shape, generator=gen) / shape[1] ** 0.5
        key_id += 2
    return state


def write_instantid_bin(path: Path, image_proj: dict[str, torch.Tensor], ip_adapter: dict[str, torch.Tensor]) -> None:
    """InstantX/InstantID ``ip-adapter.bin``: a ``torch.save`` nested dict, float32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"image_proj": image_proj, "ip_adapter": ip_adapter}, str(path))


def write_plus_face_safetensors(path: Path, image_proj: dict[str, torch.Tensor],
                                ip_adapter: dict[str, torch.Tensor], dtype: torch.dtype = torch.float16) -> None:
    """h94 ``ip-adapter-plus-face_sdxl_vit-h.safetensors``: flat ``image_proj.*`` / ``ip_adapter.*``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"image_proj.{k}": v for k, v in image_proj.items()} | {f"ip_adapter.{k}": v for k, v in ip_adapter.items()}
    save_file({k: v.to(dtype).contiguous() for k, v in flat.items()}, str(path))
