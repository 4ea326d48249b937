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


# Small configs of SDXL's real classes, with SDXL's topology where the single-file converter
# depends on it: three UNet levels (no attention in the first), a four-level VAE (8x latents), and
# two text encoders of different widths (diffusers tells CLIP-L from OpenCLIP-G by width) whose
# second has at least 10 layers (diffusers detects SDXL by ``resblocks.9``).
CLIP_L_WIDTH = 32
CLIP_G_WIDTH = 64
CLIP_G_LAYERS = 10
TIME_EMBED_DIM = 8
CROSS_ATTENTION_DIM = CLIP_L_WIDTH + CLIP_G_WIDTH
VOCAB_SIZE = 516


def tiny_unet_config() -> dict:
    return dict(
        block_out_channels=(32, 32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM, transformer_layers_per_block=(1, 1, 1),
        projection_class_embeddings_input_dim=TIME_EMBED_DIM * 6 + CLIP_G_WIDTH,
        cross_attention_dim=CROSS_ATTENTION_DIM, norm_num_groups=16,
    )


def tiny_vae_config() -> dict:
    return dict(
        block_out_channels=[8, 16, 16, 16], in_channels=3, out_channels=3, norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4, sample_size=256, layers_per_block=1, scaling_factor=0.13025, force_upcast=True,
    )


def tiny_text_configs():
    from transformers import CLIPTextConfig

    def config(width: int, layers: int, act: str) -> CLIPTextConfig:
        return CLIPTextConfig(
            bos_token_id=514, eos_token_id=515, hidden_size=width, intermediate_size=2 * width,
            layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=layers, pad_token_id=515,
            vocab_size=VOCAB_SIZE, hidden_act=act, projection_dim=width,
        )

    return config(CLIP_L_WIDTH, 3, "quick_gelu"), config(CLIP_G_WIDTH, CLIP_G_LAYERS, "gelu")


def build_tiny_inpaint_pipeline(seed: int = 0):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config())
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    vae = AutoencoderKL(**tiny_vae_config())
    text_l, text_g = tiny_text_configs()
    return StableDiffusionXLInpaintPipeline(
        vae=vae, text_encoder=CLIPTextModel(text_l), text_encoder_2=CLIPTextModelWithProjection(text_g),
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


# ---------------------------------------------------------------- single-file SDXL checkpoints (ldm layout)

LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."
LDM_CLIP_L = "conditioner.embedders.0.transformer."
LDM_CLIP_G = "conditioner.embedders.1.model."
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}


def _renamed_head(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def ldm_unet_key(key: str, per_level: int, up_attention: list[bool]) -> str:
    """The original (ldm) name of a diffusers SDXL UNet key; ``per_level`` = layers_per_block + 1."""
    head, _, leaf = key.rpartition(".")
    if head in _UNET_TOP:
        return f"{_UNET_TOP[head]}.{leaf}"
    parts = key.split(".")
    if parts[0] == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        rest = ".".join(parts[4:])
        if kind == "downsamplers":
            return f"input_blocks.{(level + 1) * per_level}.0.op.{'.'.join(parts[5:])}"
        block = 1 + level * per_level + int(parts[3])
        return (f"input_blocks.{block}.0.{_renamed_head(rest, _UNET_RESNET)}" if kind == "resnets"
                else f"input_blocks.{block}.1.{rest}")
    if parts[0] == "mid_block":
        rest = ".".join(parts[3:])
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}.{_renamed_head(rest, _UNET_RESNET)}"
        return f"middle_block.1.{rest}"
    level, kind = int(parts[1]), parts[2]
    if kind == "upsamplers":
        slot = 2 if up_attention[level] else 1
        return f"output_blocks.{level * per_level + per_level - 1}.{slot}.{'.'.join(parts[4:])}"
    block = level * per_level + int(parts[3])
    rest = ".".join(parts[4:])
    return (f"output_blocks.{block}.0.{_renamed_head(rest, _UNET_RESNET)}" if kind == "resnets"
            else f"output_blocks.{block}.1.{rest}")


def ldm_unet_state(unet) -> dict[str, torch.Tensor]:
    per_level = unet.config.layers_per_block + 1
    up_attention = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    return {LDM_UNET + ldm_unet_key(k, per_level, up_attention): v for k, v in unet.state_dict().items()}


def ldm_vae_key(key: str, levels: int) -> str:
    parts = key.split(".")
    coder = parts[0]
    if coder not in ("encoder", "decoder"):
        return key
    rest = ".".join(parts[1:])
    if rest.startswith("conv_norm_out."):
        return f"{coder}.norm_out.{parts[-1]}"
    if parts[1] in ("down_blocks", "up_blocks"):
        level = int(parts[2]) if coder == "encoder" else levels - 1 - int(parts[2])
        name = "down" if coder == "encoder" else "up"
        if parts[3] == "resnets":
            tail = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
            return f"{coder}.{name}.{level}.block.{parts[4]}.{tail}"
        sampler = "downsample" if coder == "encoder" else "upsample"
        return f"{coder}.{name}.{level}.{sampler}.{'.'.join(parts[5:])}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            tail = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
            return f"{coder}.mid.block_{int(parts[3]) + 1}.{tail}"
        return f"{coder}.mid.attn_1.{_renamed_head('.'.join(parts[4:]), _VAE_ATTENTION)}"
    return key


def ldm_vae_state(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.up_block_types)
    out = {}
    for key, value in vae.state_dict().items():
        name = ldm_vae_key(key, levels)
        if ".mid.attn_1." in name and name.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # ldm's attention projections are 1x1 convolutions
        out[LDM_VAE + name] = value
    return out


def ldm_clip_l_state(text_encoder) -> dict[str, torch.Tensor]:
    return {LDM_CLIP_L + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in text_encoder.state_dict().items()}


def open_clip_state(text_encoder_2) -> dict[str, torch.Tensor]:
    """OpenCLIP ViT-bigG text tower keys of a ``CLIPTextModelWithProjection`` (q/k/v fused)."""
    sd = {k.removeprefix("text_model."): v for k, v in text_encoder_2.state_dict().items()}
    out = {"token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           "ln_final.weight": sd.pop("final_layer_norm.weight"), "ln_final.bias": sd.pop("final_layer_norm.bias"),
           "text_projection": sd.pop("text_projection.weight").T.contiguous()}
    sd.pop("embeddings.position_ids", None)
    for i in range(text_encoder_2.config.num_hidden_layers):
        prefix = f"encoder.layers.{i}."
        block = f"transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{block}attn.in_proj_{leaf}"] = torch.cat(
                [sd.pop(f"{prefix}self_attn.{p}_proj.{leaf}") for p in ("q", "k", "v")])
        for key in [k for k in sd if k.startswith(prefix)]:
            out[block + _renamed_head(key[len(prefix):], _OPEN_CLIP_LAYER)] = sd.pop(key)
    if sd:
        raise KeyError(f"unmapped text_encoder_2 keys: {sorted(sd)[:5]}")
    return {LDM_CLIP_G + k: v for k, v in out.items()}


def write_single_file_sdxl(path: Path, pipe, dtype: torch.dtype = torch.float16) -> None:
    """An SDXL checkpoint as civitai ships them: one ``.safetensors`` in the original key layout
    (UNet, baked VAE, both text encoders)."""
    from safetensors.torch import save_file

    state = (ldm_unet_state(pipe.unet) | ldm_vae_state(pipe.vae) | ldm_clip_l_state(pipe.text_encoder)
             | open_clip_state(pipe.text_encoder_2))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(path))


# The InstantID / plus-face runtime's tiny parts, shared by face-to-sticker and consistent-character.
CLIP_VISION_WIDTH = 32
RESAMPLER_WIDTH = 64
FACE_EMBEDDING_DIM = 512  # glintr100's output
FACE_TOKENS = 16
CONTROLNET_HINT_CHANNELS = (8, 16, 16, 16)


def _randomise_zero_convs(controlnet, generator: torch.Generator) -> None:
    """ControlNets start with zero output convolutions; small random ones make the hint matter."""
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def write_controlnet(folder: Path, unet, seed: int) -> None:
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_HINT_CHANNELS)
    _randomise_zero_convs(controlnet, torch.Generator().manual_seed(seed))
    controlnet.save_pretrained(str(folder), safe_serialization=True)


def write_clip_vision(folder: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=CLIP_VISION_WIDTH, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, image_size=224, patch_size=14, projection_dim=CLIP_VISION_WIDTH)
    CLIPVisionModelWithProjection(config).save_pretrained(str(folder), safe_serialization=True)
