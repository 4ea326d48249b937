"""SDXL + InstantID + IP-Adapter plus-face on diffusers, shared by face-to-sticker and
consistent-character (sticker-and-character.md §2.3, §3.5, §4, §5).

API for a pipeline (consistent-character calls exactly this):

1. Components, once per process (``load_sdxl_components`` does this from a pipeline's files)::

       pipe = sdxl_checkpoint.load_single_file(checkpoint, sdxl_config_dir, dtype)      # or from_pipe
       load_face_adapters(pipe, instantid_bin, plus_face_safetensors)   # order: InstantID, plus-face
       parts = SDXLComponents(pipe, load_controlnet(folder, dtype), load_image_encoder(folder, dtype),
                              device, dtype)

   The two adapters go through diffusers' ``load_ip_adapter`` unchanged (InstantID's nested
   ``ip-adapter.bin``, plus-face's flat ``.safetensors``), so ``parts.pipe.unet`` carries both.

2. Conditioning per request::

       face = largest_face(detect_faces_instantid(scrfd, image_bgr))  # 640 … 192 retries, as the node
       face.embedding = arcface.embed(image_bgr, face.kps)           # raw glintr100 vector
       pos, neg = parts.prompt_encoder.encode_pair(prompt, negative)   # ComfyUI (word:1.2), > 77 tokens
       inst = instantid_embeds(face.embedding)            # [2, 1, 1, 512]: (0.35·U noise, face)
       plus = plus_face_embeds(parts.image_encoder, image_u8, noise)   # [2, 1, 257, 1280]
       kps = fit_hint(draw_kps(face.kps, w, h), W, H)    # pipelines.common.control_hint / kps_image

   Embeds are always (negative, positive) along dim 0: CFG's uncond half first.

3. One generation::

       latents = denoise(parts, pos, neg,
           adapters=[Adapter(inst, scale=0.8), Adapter(plus, scale={"up": {"block_0": [0, 1, 0]}})],
           controls=[Control(parts.identitynet, kps, scale=0.8),
                     Control(openpose_cn, pose_hint, scale=0.9, cond_only=True)],
           scheduler=any diffusers scheduler (dpmpp_2m_sde_karras() for the sticker),
           steps=4, guidance_scale=1.3, width=1024, height=1024, batch_size=M,
           generator=torch.Generator().manual_seed(seed))
       images = decode(parts.pipe.vae, latents)          # list of uint8 HWC RGB

   ``Adapter.gate`` / ``Control.gate`` are ComfyUI start/end percentages (``SigmaGate``), checked
   on each model call's σ (§4.4); a closed adapter runs at scale 0 (skipped by diffusers), a
   closed ControlNet is not run. Every ControlNet sees the 16 InstantID face tokens as its
   cross-attention context (ComfyUI's ``cross_attn_controlnet``, §2.2 step 5) unless
   ``face_context=False``; ``cond_only`` zeroes its residuals in the uncond half (the old
   positive-only ``ControlNetApply``). ``init_latents`` + ``denoise_strength`` give ComfyUI's
   img2img ``denoise`` (an int(steps/denoise)-step schedule, last ``steps`` run, §4.3).
   guidance_scale == 1 skips the uncond pass, as ComfyUI does.
   Initial latents and every scheduler draw come from ``generator`` (CPU, float32).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .comfy_prompt import ComfyPromptEncoder, PromptEmbeds
from .face_types import Face
from .ip_adapter_noise import noised_negative_image
from .sdxl_checkpoint import fuse_lora, load_single_file
from .sigma_gate import ALWAYS, SigmaGate, img2img_steps

INSTANTID_NOISE = 0.35  # ApplyInstantID's hidden default (§2.2 step 5)
# ComfyUI_InstantID seeds its negative-noise draw from the embedding's sum, modulo this prime.
INSTANTID_NOISE_MODULUS = 1000000007
CLIP_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------- loading


def load_face_adapters(pipe, instantid_bin: Path, plus_face: Path | None = None) -> None:
    """InstantID's ``ip-adapter.bin`` (and plus-face) into ``pipe.unet`` through ``load_ip_adapter``.

    No image encoder is loaded with them: InstantID has none and the plus-face embeds are made by
    ``plus_face_embeds`` (§5 "Limitations").
    """
    files = [Path(instantid_bin)] + ([Path(plus_face)] if plus_face is not None else [])
    pipe.load_ip_adapter([str(f.parent) for f in files], subfolder=[""] * len(files),
                         weight_name=[f.name for f in files], image_encoder_folder=None, local_files_only=True)


def load_controlnet(folder: Path, dtype: torch.dtype = torch.float32):
    """A diffusers ControlNet folder (IdentityNet, Zoe depth, OpenPose XL)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True)


def load_image_encoder(folder: Path, dtype: torch.dtype = torch.float32):
    from transformers import CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection.from_pretrained(str(folder), dtype=dtype, local_files_only=True).eval()


def dpmpp_2m_sde_karras(config: dict[str, Any] | None = None):
    """ComfyUI's ``dpmpp_2m_sde`` + ``karras`` (§4.3); ``config``: the checkpoint's scheduler config."""
    from diffusers import DPMSolverMultistepScheduler

    base = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}
    return DPMSolverMultistepScheduler.from_config(
        {**base, **(config or {})}, algorithm_type="sde-dpmsolver++", solver_order=2, solver_type="midpoint",
        use_karras_sigmas=True, final_sigmas_type="zero",
    )


def dpmpp_sde_karras(config: dict[str, Any] | None = None, seed: int = 0):
    """ComfyUI's ``dpmpp_sde`` + ``karras`` (§4.3, consistent-character): two model calls per step,
    noise from a Brownian tree seeded with ``seed`` (needs torchsde)."""
    from diffusers import DPMSolverSDEScheduler

    base = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": "epsilon"}
    return DPMSolverSDEScheduler.from_config({**base, **(config or {})}, use_karras_sigmas=True,
                                             noise_sampler_seed=seed)


@dataclass
class SDXLComponents:
    """The shared runtime: ``pipe`` (an SDXL diffusers pipeline whose UNet carries the adapters),
    the IdentityNet and the CLIP-ViT-H image encoder, placed on ``device`` in ``dtype``."""

    pipe: Any
    identitynet: Any
    image_encoder: Any
    device: torch.device
    dtype: torch.dtype
    prompt_encoder: ComfyPromptEncoder = field(init=False)

    def __post_init__(self):
        self.device = torch.device(self.device)
        for module in (self.pipe.unet, self.pipe.text_encoder, self.pipe.text_encoder_2, self.identitynet,
                       self.image_encoder):
            if module is not None:
                module.to(device=self.device, dtype=self.dtype).eval()
        # The SDXL VAE overflows in fp16 (force_upcast): it always runs in float32, tiled when large.
        self.pipe.vae.to(device=self.device, dtype=torch.float32).eval()
        self.pipe.set_progress_bar_config(disable=True)
        self.prompt_encoder = ComfyPromptEncoder(self.pipe.tokenizer, self.pipe.text_encoder,
                                                 self.pipe.tokenizer_2, self.pipe.text_encoder_2)


def load_sdxl_components(files: Mapping[str, Path], device: str | torch.device, dtype: torch.dtype,
                         lora: tuple[Path, float] | None = None) -> SDXLComponents:
    """Step 1 from a pipeline's role files (``checkpoint``, ``sdxl_config``, ``instantid_adapter``,
    ``plus_face``, ``identitynet``, ``image_encoder``). A LoRA is fused into the checkpoint before
    the adapters attach, as the graph loads it (§2.1)."""
    pipe = load_single_file(files["checkpoint"], files["sdxl_config"].parent, dtype)
    if lora is not None:
        fuse_lora(pipe, *lora)
    load_face_adapters(pipe, files["instantid_adapter"], files["plus_face"])
    return SDXLComponents(
        pipe=pipe,
        identitynet=load_controlnet(files["identitynet"].parent, dtype),
        image_encoder=load_image_encoder(files["image_encoder"].parent, dtype),
        device=device,
        dtype=dtype,
    )


# ---------------------------------------------------------------- faces

# ComfyUI_InstantID retries an empty detection at smaller square sizes (§2.2 step 5): a face
# filling a close-up photo is too large for SCRFD at 640.
INSTANTID_DET_SIZES = tuple(range(640, 128, -64))


def detect_faces_instantid(detector, image_bgr: np.ndarray) -> list[Face]:
    """``detector``'s faces at the first of 640, 576 … 192 that finds any (only at the file's own
    size when the ONNX input is fixed)."""
    from .scrfd import detection_blob, detections_from_outputs, letterbox

    height, width = detector.session.get_inputs()[0].shape[2:4]
    sizes = [detector.det_size] if isinstance(width, int) and isinstance(height, int) else \
        [(s, s) for s in INSTANTID_DET_SIZES]
    for size in sizes:
        det_img, scale = letterbox(image_bgr, size)
        det, kps = detections_from_outputs(detector.raw_outputs(detection_blob(det_img)), (size[1], size[0]), scale,
                                           image_bgr.shape[:2], detector.det_thresh, detector.nms_thresh, 0)
        if len(det) and kps is not None:
            return [Face(bbox=d[:4].copy(), kps=k.copy(), det_score=float(d[4])) for d, k in zip(det, kps)]
    return []


# ---------------------------------------------------------------- embeddings


def instantid_negative(face_embedding: torch.Tensor, noise: float = INSTANTID_NOISE) -> torch.Tensor:
    """ComfyUI_InstantID's negative: noise·U[0, 1) seeded from int(sum(embedding)) (§2.2 step 5)."""
    if noise <= 0:
        return torch.zeros_like(face_embedding)
    seed = int(torch.sum(face_embedding).item()) % INSTANTID_NOISE_MODULUS
    generator = torch.Generator().manual_seed(seed)
    return noise * torch.rand(face_embedding.shape, generator=generator, dtype=face_embedding.dtype)


def instantid_embeds(face_embedding: np.ndarray, noise: float = INSTANTID_NOISE) -> torch.Tensor:
    """[2, 1, 1, 512] (negative, positive) from the raw, un-normalised 512-d antelopev2 embedding."""
    emb = torch.as_tensor(np.asarray(face_embedding, dtype=np.float32)).reshape(1, -1)
    return torch.stack([instantid_negative(emb, noise), emb])[:, :, None, :]


def clip_pixels(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI ``clip_preprocess``: (B, H, W, 3) float in [0, 1] → normalised (B, 3, 224, 224).

    Shortest side to 224 (bicubic, antialiased), centre crop, quantised to 8-bit levels.
    """
    x = image.permute(0, 3, 1, 2).float()
    height, width = x.shape[-2:]
    scale = CLIP_SIZE / min(height, width)
    size = (round(scale * height), round(scale * width))
    if size != (height, width):
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True)
    top, left = (size[0] - CLIP_SIZE) // 2, (size[1] - CLIP_SIZE) // 2
    x = x[..., top:top + CLIP_SIZE, left:left + CLIP_SIZE]
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def clip_penultimate(image_encoder, image: torch.Tensor) -> torch.Tensor:
    """(B, 257, 1280) penultimate hidden states of (B, H, W, 3) images in [0, 1]."""
    pixels = clip_pixels(image).to(device=image_encoder.device, dtype=image_encoder.dtype)
    return image_encoder(pixels, output_hidden_states=True).hidden_states[-2]


def plus_face_embeds(image_encoder, image_u8: np.ndarray, noise: float) -> torch.Tensor:
    """[2, 1, 257, 1280] (negative, positive) plus-face embeds of the whole input image (§2.2 step 6).

    The negative is the CLIP states of the noised copy (``ip_adapter_noise`` > 0) or of a black image.
    """
    image = torch.from_numpy(np.ascontiguousarray(image_u8)).float()[None] / 255.0
    negative_image = noised_negative_image(image, noise) if noise > 0 else torch.zeros(1, CLIP_SIZE, CLIP_SIZE, 3)
    states = [clip_penultimate(image_encoder, x) for x in (negative_image, image)]
    return torch.cat(states)[:, None]


def face_tokens(unet, embeds: torch.Tensor, adapter_index: int = 0) -> torch.Tensor:
    """(N, 16, 2048) InstantID face tokens of [N, 1, 1, 512] embeds: the IdentityNet's context."""
    projection = unet.encoder_hid_proj.image_projection_layers[adapter_index]
    return projection(embeds.reshape(embeds.shape[0], -1, embeds.shape[-1]))


# ---------------------------------------------------------------- denoising


@dataclass
class Adapter:
    """One loaded IP-Adapter's embeds ([2, 1, seq, dim], negative first) and scale (a float or a
    diffusers per-block dict), active inside ``gate``."""

    embeds: torch.Tensor
    scale: float | dict
    gate: SigmaGate = ALWAYS


@dataclass
class Control:
    """A ControlNet with its hint ((1, 3, H, W) in [0, 1]), strength and σ gate."""

    model: Any
    image: torch.Tensor
    scale: float
    gate: SigmaGate = ALWAYS
    face_context: bool = True
    cond_only: bool = False


def _halves(pair: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(negative, positive) → each repeated ``batch_size`` times: [neg × B, pos × B]."""
    return torch.cat([pair[:1].repeat_interleave(batch_size, 0), pair[1:2].repeat_interleave(batch_size, 0)])


def _add_time_ids(height: int, width: int) -> torch.Tensor:
    # SDXL micro-conditioning: original size, crop (0, 0), target size (§2.3).
    return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)


def _scale_at(adapter: Adapter, sigma: float):
    return adapter.scale if adapter.gate.is_open(sigma) else 0.0


def _controlnet_residuals(controls: list[Control], latent_in, t, sigma, text_context, face_context,
                          added, do_cfg, batch_size):
    down, mid = None, None
    for control in controls:
        if control.scale == 0 or not control.gate.is_open(sigma):
            continue
        context = face_context if control.face_context else text_context
        hint = control.image.to(device=latent_in.device, dtype=latent_in.dtype)
        hint = hint.repeat(latent_in.shape[0], 1, 1, 1)
        d, m = control.model(latent_in, t, encoder_hidden_states=context, controlnet_cond=hint,
                             conditioning_scale=float(control.scale), added_cond_kwargs=added, return_dict=False)
        if control.cond_only and do_cfg:
            keep = torch.ones(latent_in.shape[0], 1, 1, 1, device=latent_in.device, dtype=latent_in.dtype)
            keep[:batch_size] = 0
            d, m = [r * keep for r in d], m * keep
        down = list(d) if down is None else [a + b for a, b in zip(down, d)]
        mid = m if mid is None else mid + m
    return down, mid


@torch.no_grad()
def denoise(parts: SDXLComponents, positive: PromptEmbeds, negative: PromptEmbeds, adapters: list[Adapter],
            controls: list[Control], scheduler, steps: int, guidance_scale: float, width: int, height: int,
            generator: torch.Generator, batch_size: int = 1, init_latents: torch.Tensor | None = None,
            denoise_strength: float = 1.0, on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The sampling loop; returns float32 latents (B, 4, H/8, W/8). See the module docstring."""
    unet, device, dtype = parts.pipe.unet, parts.device, parts.dtype
    # ComfyUI skips the uncond pass only at cfg 1; below 1 it still mixes (diffusers would not).
    do_cfg = not math.isclose(guidance_scale, 1.0)
    total, _ = img2img_steps(steps, denoise_strength) if init_latents is not None else (steps, 1.0)
    scheduler.set_timesteps(total, device=device)
    # ``scheduler.order`` model calls per step (2 for DPM++ SDE): skip whole steps of the schedule.
    start = (total - steps) * scheduler.order
    timesteps = scheduler.timesteps[start:]
    sigmas = scheduler.sigmas[start:].float().cpu()
    if start and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)

    shape = (batch_size, unet.config.in_channels, height // parts.pipe.vae_scale_factor,
             width // parts.pipe.vae_scale_factor)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if init_latents is None:
        latents = (noise * scheduler.init_noise_sigma).to(device)
    else:
        latents = scheduler.add_noise(init_latents.float().to(device), noise.to(device), timesteps[:1])

    def both(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([neg, pos]) if do_cfg else pos
        return _halves(pair, batch_size) if do_cfg else pair.repeat_interleave(batch_size, 0)

    text = both(positive.hidden, negative.hidden).to(device=device, dtype=dtype)
    pooled = both(positive.pooled, negative.pooled).to(device=device, dtype=dtype)
    time_ids = _add_time_ids(height, width).repeat(text.shape[0], 1).to(device=device, dtype=dtype)
    image_embeds = [(_halves(a.embeds, batch_size) if do_cfg else a.embeds[1:].repeat_interleave(batch_size, 0))
                    .to(device=device, dtype=dtype) for a in adapters]
    added = {"text_embeds": pooled, "time_ids": time_ids}
    faces = face_tokens(unet, image_embeds[0]) if adapters else None

    # DPM++ 2M SDE draws from ``generator``; DPM++ SDE has its own seeded Brownian tree.
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    current_scales = None
    for i, t in enumerate(timesteps):
        sigma = float(sigmas[i])
        scales = [_scale_at(a, sigma) for a in adapters]
        if scales != current_scales:
            parts.pipe.set_ip_adapter_scale(scales)
            current_scales = scales
        latent_in = torch.cat([latents] * 2) if do_cfg else latents
        latent_in = scheduler.scale_model_input(latent_in, t).to(dtype)
        down, mid = _controlnet_residuals(controls, latent_in, t, sigma, text, faces, added, do_cfg, batch_size)
        noise_pred = unet(latent_in, t, encoder_hidden_states=text,
                          added_cond_kwargs={**added, "image_embeds": image_embeds},
                          down_block_additional_residuals=down, mid_block_additional_residual=mid,
                          return_dict=False)[0].float()
        if do_cfg:
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(noise_pred, t, latents, return_dict=False, **step_kwargs)[0]
        if on_step is not None:
            on_step(i + 1, len(timesteps))
    return latents


# A decoded side above this many pixels is decoded in tiles (§7: 1024² fits, 1536² and batches tile).
VAE_TILING_ABOVE = 1024


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> list[np.ndarray]:
    """uint8 HWC RGB images of float latents (the VAE runs in float32)."""
    side = max(latents.shape[-2:]) * 8
    if side > VAE_TILING_ABOVE:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    pixels = vae.decode(latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor,
                        return_dict=False)[0]
    pixels = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255.0).round().to(torch.uint8)
    return [p.permute(1, 2, 0).cpu().numpy() for p in pixels]


@torch.no_grad()
def encode(vae, images: list[np.ndarray]) -> torch.Tensor:
    """float32 latents (B, 4, H/8, W/8) of same-sized uint8 HWC RGB images (img2img passes:
    consistent-character's refine and eye detailers, §3.3). The latent is the posterior mean."""
    side = max(images[0].shape[:2])
    if side > VAE_TILING_ABOVE:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    posterior = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return posterior.mode().float() * vae.config.scaling_factor
