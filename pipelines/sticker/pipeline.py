"""``/v1/face-to-sticker``: the fofr face-to-sticker ComfyUI workflow on diffusers
(sticker-and-character.md §2.2, §2.3).

Data flow: largest face (antelopev2 SCRFD) → raw glintr100 embedding → InstantID embeds (face,
0.35·U noise negative) and the 5-point keypoint hint; Zoe depth hint; plus-face CLIP embeds of the
whole photo (noised-copy negative) → prompt templates, ComfyUI-weighted → 20 steps of DPM++ 2M SDE
Karras with IdentityNet (face-token context) + depth ControlNet 0.2 (σ-gated to 70 %), InstantID
attention, plus-face 0.2 (σ-gated to 20 %), CFG = ``prompt_strength`` (the original ignores it; we
honour it, §0 item 4) → VAE decode → [4x ESRGAN, tiled SD1.5 img2img at 2x] → background removal
→ RGBA.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from pipelines.base import (
    InputError,
    LicenceRefused,
    LoadOptions,
    PipelineResult,
    Progress,
    WeightsMissing,
    report_progress,
)
from pipelines.common.component_files import locate_components, torch_dtype
from pipelines.common.control_hint import fit_hint
from pipelines.common.face_types import Face, largest_face
from pipelines.common.instantid import (
    Adapter,
    Control,
    decode,
    denoise,
    detect_faces_instantid,
    dpmpp_2m_sde_karras,
    instantid_embeds,
    plus_face_embeds,
)
from pipelines.common.kps_image import draw_kps
from pipelines.common.timing import StageTimer
from pipelines.weights.manifest import load_manifest

from . import config
from .loader import (
    BACKGROUND_REMOVERS,
    FOLDER_PREFIXES,
    ROLES,
    UPSCALE_FOLDER_PREFIX,
    UPSCALE_ROLES,
    StickerComponents,
    load_components,
)
from .params import Params
from .upscale import TiledUpscaler

SLUG = "face-to-sticker"
# detect+embed, conditioning, denoise, decode, background: where a cancelled job stops.
STAGES = 5


class FaceToStickerPipeline:
    name = SLUG
    params_type = Params
    # SDXL runs in fp16 on CUDA as the workflow's ComfyUI does; the VAE, depth, background and face
    # networks stay float32 (components' own choice).
    half_precision = True

    def __init__(self, components: StickerComponents, report: list[dict], device: str = "cpu",
                 upscaler: TiledUpscaler | None = None, upscale_unavailable: Exception | None = None):
        self.c = components
        self.report = report
        self.device = device
        self.upscaler = upscaler
        # Why ``upscale=true`` cannot run (files not installed, or a licence not allowed), raised
        # per request so that the endpoint itself stays up.
        self.upscale_unavailable = upscale_unavailable

    @classmethod
    def load(cls, options: LoadOptions) -> "FaceToStickerPipeline":
        manifest = load_manifest()
        folder_files = [e.id for e in manifest.for_pipeline(SLUG) if e.required and e.id.startswith(FOLDER_PREFIXES)]
        roles = {**ROLES, "background": BACKGROUND_REMOVERS[options.background_remover]}
        paths, report = locate_components(SLUG, list(dict.fromkeys([*roles.values(), *folder_files])), options)
        files = {role: paths[entry] for role, entry in roles.items()}
        dtype = torch_dtype(options.dtype, options.device)
        components = load_components(files, options.device, dtype)
        upscaler, unavailable = None, None
        upscale_ids = [*UPSCALE_ROLES.values(), *(e.id for e in manifest.for_pipeline(SLUG)
                                                 if e.id.startswith(UPSCALE_FOLDER_PREFIX))]
        try:
            upscale_paths, upscale_report = locate_components(SLUG, list(dict.fromkeys(upscale_ids)), options)
        except (WeightsMissing, LicenceRefused) as err:
            unavailable = err
        else:
            upscaler = TiledUpscaler.load(upscale_paths[UPSCALE_ROLES["esrgan"]],
                                          upscale_paths[UPSCALE_ROLES["sd15"]].parent, options.device, dtype)
            report = report + upscale_report
        return cls(components, report, options.device, upscaler, unavailable)

    def components(self) -> list[dict]:
        return self.report

    def free_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def detect(self, image: np.ndarray) -> Face:
        """The largest face (the node's own size sort has a precedence bug, §4.6)."""
        bgr = np.ascontiguousarray(image[..., ::-1])
        face = largest_face(detect_faces_instantid(self.c.detector, bgr))
        if face is None:
            raise InputError("No face detected in image")
        return face

    def __call__(self, params: Params, inputs: Mapping[str, Any], seed: int,
                 progress: Progress | None = None) -> PipelineResult:
        image = np.ascontiguousarray(inputs["image"][..., :3])
        width, height = config.latent_size(params.width, params.height)
        sdxl = self.c.sdxl
        timer = StageTimer(self.device)
        with timer.stage("detect"):
            face = self.detect(image)
        with timer.stage("embed"):
            face.embedding = self.c.recognizer.embed(np.ascontiguousarray(image[..., ::-1]), face.kps)
            inst = instantid_embeds(face.embedding)
            plus = plus_face_embeds(sdxl.image_encoder, image, params.ip_adapter_noise)
        report_progress(progress, 1, STAGES)
        with timer.stage("control_hints"):
            kps_hint = fit_hint(draw_kps(face.kps, image.shape[1], image.shape[0]), width, height)
            depth_hint = fit_hint(self.c.depth.hint(image), width, height)
        with timer.stage("encode_prompt"):
            positive, negative = sdxl.prompt_encoder.encode_pair(
                config.positive_prompt(params.prompt), config.negative_prompt(params.negative_prompt))
        report_progress(progress, 2, STAGES)
        with timer.stage("denoise"):
            latents = denoise(
                sdxl, positive, negative,
                adapters=[Adapter(inst, params.instant_id_strength),
                          Adapter(plus, params.ip_adapter_weight, config.PLUS_FACE_GATE)],
                controls=[Control(sdxl.identitynet, kps_hint, params.instant_id_strength),
                          Control(self.c.depth_controlnet, depth_hint, config.DEPTH_STRENGTH, config.DEPTH_GATE)],
                scheduler=dpmpp_2m_sde_karras(dict(sdxl.pipe.scheduler.config)),
                steps=params.steps, guidance_scale=params.prompt_strength, width=width, height=height,
                generator=torch.Generator().manual_seed(seed),
            )
        report_progress(progress, 3, STAGES)
        with timer.stage("decode"):
            sticker = decode(sdxl.pipe.vae, latents)[0]
        if params.upscale:
            if self.upscaler is None:
                raise self.upscale_unavailable
            with timer.stage("upscale"):
                sticker = self.upscaler.upscale(sticker, params.upscale_steps, seed)
        report_progress(progress, 4, STAGES)
        with timer.stage("remove_background"):
            rgba = self.c.background.remove(sticker)
        report_progress(progress, 5, STAGES)
        return PipelineResult(images=[rgba], info={"timings": timer.seconds, "steps": params.steps,
                                                     "size": list(rgba.shape[1::-1])})
