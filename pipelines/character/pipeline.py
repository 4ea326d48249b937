"""``/v1/consistent-character``: the fofr consistent-character ComfyUI workflow on diffusers
(sticker-and-character.md §3.2, §3.3, §3.5).

Data flow: largest face of ``subject`` (antelopev2 SCRFD) → raw glintr100 embedding → InstantID
embeds (0.35·U noise negative); plus-face CLIP embeds of the whole subject (black-image negative)
→ poses from the in-house library (a per-request copy, shuffled under the seed) → per pose i, with
seed + i: both hints rendered at the generation size → 4 steps of DPM++ SDE Karras at CFG 1.3 with
IdentityNet 0.8 + OpenPose XL 0.9 (conditional half only, face-token context), InstantID 0.8 and
plus-face in "style transfer" (``up_blocks.0.attentions.1`` only), ``number_of_images_per_pose``
images in one batch → per image: eye detailer (adapters on) → Lanczos ×1.5 → filters → refine at
denoise 0.2 with IdentityNet on the keypoint hint at the larger size → eye detailer on the plain
model with the corrected prompts → filters → safety checker.

The generation side is the checkpoint's native one (UNet sample size × VAE factor: 1024 for SDXL,
the workflow's EmptyLatentImage), the refine side 1.5× that (1536). The original's fixed detailer
and refine seeds (§9) are replaced by the pose's seed, so that every draw follows the request seed.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from pipelines.base import InputError, LoadOptions, PipelineResult, Progress, report_progress
from pipelines.common.comfy_prompt import PromptEmbeds
from pipelines.common.component_files import locate_components, torch_dtype
from pipelines.common.face_types import Face, largest_face
from pipelines.common.instantid import (
    Adapter,
    Control,
    decode,
    denoise,
    dpmpp_sde_karras,
    encode,
    instantid_embeds,
    plus_face_embeds,
)
from pipelines.common.timing import StageTimer
from pipelines.weights.manifest import load_manifest

from . import config
from .image_filters import filter_adjustments
from .loader import FOLDER_PREFIXES, ROLES, CharacterComponents, load_components
from .params import Params
from .pose_library import Pose, choose_poses, load_pose_library, render_kps_hint, render_pose_hint

SLUG = "consistent-character"


def hint_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HWC RGB hint → float (1, 3, H, W) in [0, 1], as ControlNets take it."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def lanczos_scale(image: np.ndarray, factor: float) -> np.ndarray:
    """ImageScaleBy (103): ``round(side × factor)`` with PIL's Lanczos."""
    height, width = image.shape[:2]
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


class ConsistentCharacterPipeline:
    name = SLUG
    params_type = Params
    # SDXL and its ControlNets run in fp16 on CUDA as the workflow's ComfyUI does; the VAE, the eye
    # detector, the safety checker and the face networks stay float32 (components' own choice).
    half_precision = True

    def __init__(self, components: CharacterComponents, report: list[dict], device: str = "cpu"):
        self.c = components
        self.report = report
        self.device = device
        self.poses = load_pose_library()
        sdxl = components.sdxl
        self.side = sdxl.pipe.unet.config.sample_size * sdxl.pipe.vae_scale_factor
        self.refine_side = round(self.side * config.UPSCALE)

    @classmethod
    def load(cls, options: LoadOptions) -> "ConsistentCharacterPipeline":
        manifest = load_manifest()
        folder_files = [e.id for e in manifest.for_pipeline(SLUG) if e.required and e.id.startswith(FOLDER_PREFIXES)]
        paths, report = locate_components(SLUG, list(dict.fromkeys([*ROLES.values(), *folder_files])), options)
        files = {role: paths[entry] for role, entry in ROLES.items()}
        components = load_components(files, options.device, torch_dtype(options.dtype, options.device))
        return cls(components, report, options.device)

    def components(self) -> list[dict]:
        return self.report

    def onnx_providers(self) -> list[str]:
        """The execution providers antelopev2's onnxruntime sessions actually use (for /ready)."""
        sessions = (self.c.detector.session, self.c.recognizer.session)
        return sorted({provider for session in sessions for provider in session.get_providers()})

    def free_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def detect(self, image: np.ndarray) -> Face:
        bgr = np.ascontiguousarray(image[..., ::-1])
        face = largest_face(self.c.detector.detect_faces(bgr))
        if face is None:
            raise InputError("No face detected in subject")
        face.embedding = self.c.recognizer.embed(bgr, face.kps)
        return face

    def _scheduler(self, seed: int):
        return dpmpp_sde_karras(dict(self.c.sdxl.pipe.scheduler.config), seed)

    def _img2img(self, image: np.ndarray, positive: PromptEmbeds, negative: PromptEmbeds, adapters: list[Adapter],
                 controls: list[Control], strength: float, seed: int) -> np.ndarray:
        """``config.STEPS`` steps of a KSampler at cfg 1 and ``denoise`` = ``strength`` on ``image``."""
        sdxl = self.c.sdxl
        height, width = image.shape[:2]
        latents = denoise(
            sdxl, positive, negative, adapters=adapters, controls=controls, scheduler=self._scheduler(seed),
            steps=config.STEPS, guidance_scale=config.DETAIL_CFG, width=width, height=height,
            generator=torch.Generator().manual_seed(seed), init_latents=encode(sdxl.pipe.vae, [image]),
            denoise_strength=strength,
        )
        return decode(sdxl.pipe.vae, latents)[0]

    def _detail_eyes(self, image: np.ndarray, prompts: tuple[PromptEmbeds, PromptEmbeds], adapters: list[Adapter],
                     seed: int) -> tuple[np.ndarray, int]:
        def enhance(crop: np.ndarray) -> np.ndarray:
            return self._img2img(crop, *prompts, adapters, [], config.EYES_DENOISE, seed)

        return self.c.eyes(image, enhance)

    def _finish(self, image: np.ndarray, pose: Pose, prompts, eye_prompts, adapters: list[Adapter],
                plain: list[Adapter], seed: int, timer: StageTimer) -> np.ndarray:
        """Detailer → ×1.5 → filters → refine → plain-model detailer → filters (§3.3 steps 8–13)."""
        sdxl = self.c.sdxl
        with timer.stage("eye_detailer"):
            image, _ = self._detail_eyes(image, eye_prompts, adapters, seed)
        with timer.stage("upscale_filters"):
            image = filter_adjustments(lanczos_scale(image, config.UPSCALE))
        with timer.stage("refine"):
            height, width = image.shape[:2]
            kps = hint_tensor(render_kps_hint(pose, width, height))
            image = self._img2img(image, *prompts, adapters,
                                  [Control(sdxl.identitynet, kps, config.INSTANTID_WEIGHT)],
                                  config.REFINE_DENOISE, seed)
        with timer.stage("eye_detailer"):
            image, _ = self._detail_eyes(image, eye_prompts, plain, seed)
        with timer.stage("upscale_filters"):
            image = filter_adjustments(image)
        return image

    def __call__(self, params: Params, inputs: Mapping[str, Any], seed: int,
                 progress: Progress | None = None) -> PipelineResult:
        subject = np.ascontiguousarray(inputs["subject"][..., :3])
        sdxl = self.c.sdxl
        per_pose = params.number_of_images_per_pose
        total = params.number_of_outputs * per_pose
        timer = StageTimer(self.device)
        with timer.stage("detect_embed"):
            face = self.detect(subject)
            inst = instantid_embeds(face.embedding)
            plus = plus_face_embeds(sdxl.image_encoder, subject, noise=0.0)
        with timer.stage("encode_prompt"):
            prompts = sdxl.prompt_encoder.encode_pair(params.prompt, config.negative_prompt(params.negative_prompt))
            eye_prompts = sdxl.prompt_encoder.encode_pair(config.EYES_POSITIVE, config.EYES_NEGATIVE)
        style = config.style_transfer_scale(len(sdxl.pipe.unet.up_blocks[0].attentions))
        adapters = [Adapter(inst, config.INSTANTID_WEIGHT), Adapter(plus, style)]
        # Detailer 2 runs on the checkpoint's own model: adapters at scale 0 are skipped by diffusers.
        plain = [Adapter(inst, 0.0), Adapter(plus, 0.0)]
        poses = choose_poses(self.poses, params.number_of_outputs, params.randomise_poses, seed)

        kept, nsfw, done = [], 0, 0
        for index, pose in enumerate(poses):
            pose_seed = config.pose_seed(seed, index)
            with timer.stage("hints"):
                kps = hint_tensor(render_kps_hint(pose, self.side, self.side))
                skeleton = hint_tensor(render_pose_hint(pose, self.side, self.side))
            with timer.stage("generate"):
                latents = denoise(
                    sdxl, *prompts, adapters=adapters,
                    controls=[Control(sdxl.identitynet, kps, config.INSTANTID_WEIGHT),
                              Control(self.c.openpose, skeleton, config.OPENPOSE_STRENGTH, cond_only=True)],
                    scheduler=self._scheduler(pose_seed), steps=config.STEPS, guidance_scale=config.GUIDANCE,
                    width=self.side, height=self.side, generator=torch.Generator().manual_seed(pose_seed),
                    batch_size=per_pose,
                )
                images = decode(sdxl.pipe.vae, latents)
            for image in images:
                image = self._finish(image, pose, prompts, eye_prompts, adapters, plain, pose_seed, timer)
                with timer.stage("safety_checker"):
                    flagged = self.c.safety.nsfw([image])[0]
                if flagged:
                    nsfw += 1
                else:
                    kept.append(image)
                done += 1
                report_progress(progress, done, total)
        if not kept:
            raise InputError(f"All {total} generated images were flagged as NSFW by the safety checker; "
                             "try another prompt or subject")
        return PipelineResult(images=kept, info={
            "timings": timer.seconds, "poses": [p.name for p in poses], "nsfw_dropped": nsfw,
            "size": [self.refine_side, self.refine_side],
        })
