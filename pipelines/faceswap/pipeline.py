"""faceswap-v4: face swap and head swap (faceswap.md §6), composed from components it is handed.

Components and their default manifest entries (§6.1); each role can be pointed at another
entry of the same kind through ``FaceSwapPipeline.ROLES`` so a licence-clean substitute loads
without touching the flow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from pipelines.base import InputError, LoadOptions, PipelineResult, Progress, report_progress
from pipelines.common.arcface import ArcFace
from pipelines.common.color_transfer import SKIN_CLASSES
from pipelines.common.component_files import locate_components, torch_dtype
from pipelines.common.face_restore import FaceEnhancer
from pipelines.common.face_restore_loader import load_gfpgan, load_parsenet
from pipelines.common.face_types import Face, largest_face
from pipelines.common.inpainter import SDXLInpainter
from pipelines.common.inswapper import INSwapper
from pipelines.common.scrfd import SCRFD
from pipelines.common.timing import StageTimer
from pipelines.weights.manifest import load_manifest

from . import masks, swap
from .params import Params
from .style import apply_style, blend

SLUG = "faceswap-v4"
# detect+embed, parse, swap (with its refinements), style: where a cancelled job stops.
STAGES = 4


@dataclass
class FaceSwapComponents:
    detector: SCRFD
    recognizer: ArcFace
    swapper: INSwapper
    parser: Any
    enhancer: FaceEnhancer
    inpainter: SDXLInpainter


class FaceSwapPipeline:
    name = SLUG
    params_type = Params
    # ``--dtype auto`` on CUDA: float16 reaches only the SDXL inpainter (SCRFD, ArcFace and inswapper
    # run in onnxruntime, ParseNet and GFPGAN stay float32); no parity fixture covers the diffusion
    # refine, and diffusers runs SDXL in float16 on CUDA as a matter of course.
    half_precision = True
    ROLES = {
        "detector": "insightface.buffalo_l.det_10g",
        "recognizer": "insightface.buffalo_l.w600k_r50",
        "swapper": "inswapper_128",
        "parser": "facexlib.parsenet",
        "restorer": "gfpgan_v1.4",
        "inpainter": "sdxl.base.model_index",
        "inpainter_lightning": "sdxl.lightning_8step_lora",
    }
    # The inpainter's folder: every SDXL base file the manifest lists for this pipeline.
    INPAINTER_FILES = "sdxl.base."

    def __init__(self, components: FaceSwapComponents, report: list[dict], device: str = "cpu"):
        self.c = components
        self.report = report
        self.device = device

    @classmethod
    def load(cls, options: LoadOptions) -> "FaceSwapPipeline":
        manifest = load_manifest()
        sdxl_files = [e.id for e in manifest.for_pipeline(SLUG) if e.id.startswith(cls.INPAINTER_FILES)]
        paths, report = locate_components(SLUG, list(dict.fromkeys([*cls.ROLES.values(), *sdxl_files])), options)
        role = {name: paths[entry] for name, entry in cls.ROLES.items()}
        dtype = torch_dtype(options.dtype, options.device)
        parser = load_parsenet(role["parser"]).to(options.device)
        components = FaceSwapComponents(
            detector=SCRFD(role["detector"], device=options.device),
            recognizer=ArcFace(role["recognizer"], device=options.device),
            swapper=INSwapper(role["swapper"], device=options.device),
            parser=parser,
            enhancer=FaceEnhancer(load_gfpgan(role["restorer"]).to(options.device), parser),
            inpainter=SDXLInpainter.load(role["inpainter"].parent, role["inpainter_lightning"],
                                         options.device, dtype),
        )
        return cls(components, report, options.device)

    def components(self) -> list[dict]:
        return self.report

    def onnx_providers(self) -> list[str]:
        """The execution providers the onnxruntime sessions actually use (for /ready)."""
        sessions = (self.c.detector.session, self.c.recognizer.session, self.c.swapper.session)
        return sorted({provider for session in sessions for provider in session.get_providers()})

    def free_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def detect(self, image: np.ndarray, field: str) -> Face:
        face = largest_face(self.c.detector.detect_faces(np.ascontiguousarray(image[..., ::-1])))
        if face is None:
            raise InputError(f"No face detected in {field}")
        return face

    def __call__(self, params: Params, inputs: Mapping[str, Any], seed: int,
                 progress: Progress | None = None) -> PipelineResult:
        source, target = inputs["source_image"], inputs["target_image"]
        model_type, swap_type, style_type = params.model_type, params.swap_type, params.style_type
        timer = StageTimer(self.device)
        with timer.stage("detect"):
            source_face = self.detect(source, "source_image")
            target_face = self.detect(target, "target_image")
        with timer.stage("embed"):
            source_face.embedding = self.c.recognizer.embed(np.ascontiguousarray(source[..., ::-1]), source_face.kps)
            latent = self.c.swapper.latent(source_face.embedding)
        report_progress(progress, 1, STAGES)
        generator = torch.Generator(self.device).manual_seed(seed)
        rng = np.random.default_rng(seed)
        settings = swap.STYLE_SETTINGS[style_type]
        size = swap.BOOST_SIZE[model_type]
        with torch.inference_mode():
            with timer.stage("parse"):
                # The swap keeps the target's pose and expression, so one parse of the original target
                # places the inner face for every stage (swap, refine, re-lock) and its skin for the
                # colour statistics (§4.4); an unedited photo also parses more reliably than a swapped one.
                target_parsing = swap.parse_face(self.c.parser, target, target_face)
                inner = masks.class_mask(target_parsing, masks.INNER_FACE)
            report_progress(progress, 2, STAGES)
            if swap_type == "head":
                result, region = self.head_swap(source, source_face, target, target_face, latent, size, inner,
                                                model_type, settings, generator, timer)
            else:
                result, region = self.face_swap(target, target_face, latent, size, inner, model_type, settings,
                                                generator, timer)
        report_progress(progress, 3, STAGES)
        with timer.stage("style"):
            skin = masks.class_mask(target_parsing, SKIN_CLASSES)
            result = apply_style(result, region, target, skin, style_type, swap.face_size(target_face), rng)
        report_progress(progress, 4, STAGES)
        return PipelineResult(images=[result], info={"swap_type": swap_type, "model_type": model_type,
                                                     "timings": timer.seconds})

    def face_swap(self, target, face, latent, size, inner, model_type, settings, generator, timer):
        """§6.3: identity swap, restore, light diffusion refine, identity re-lock."""
        c = self.c
        with timer.stage("swap"):
            result, region = swap.swap_identity(c.swapper, target, face, latent, size, inner)
        with timer.stage("restore"):
            result = swap.restore(c.enhancer, result, face, settings.restore_blend, generator)
        if swap.face_size(face) >= swap.MIN_DIFFUSION_FACE:
            with timer.stage("refine"):
                result = swap.refine_face(c.inpainter, result, face, inner, model_type, settings.refine_strength,
                                          generator)
            with timer.stage("relock"):
                result = swap.relock(c.swapper, result, face, latent, size, inner, settings.relock_blend)
        return result, region

    def head_swap(self, source, source_face, target, face, latent, size, inner, model_type, settings, generator,
                  timer):
        """§6.4: swap → compose → refine → re-lock."""
        c = self.c
        with timer.stage("swap"):
            swapped, pasted = swap.swap_identity(c.swapper, target, face, latent, size, inner)
        if swap.face_size(face) < swap.MIN_DIFFUSION_FACE:
            with timer.stage("restore"):
                return swap.restore(c.enhancer, swapped, face, settings.restore_blend, generator), pasted
        with timer.stage("compose"):
            src_warped, src_head, src_inner = swap.warp_source_head(c.parser, source, source_face, target.shape, face)
            composed, _ = swap.compose_head(swapped, src_warped, src_head, src_inner)
            target_parsing = swap.parse_in_frame(c.parser, target, swap.head_affine(face.kps))
            target_head = masks.class_mask(target_parsing, masks.HEAD)
            inner_core = masks.class_mask(target_parsing, masks.INNER_CORE)
            mi = swap.head_inpaint_mask(target_head, src_head, inner_core, face)
        with timer.stage("inpaint"):
            box = swap.square_around(face, 2.6, target.shape[:2])
            # One pass at high strength over Mi, then the hair band re-blended with C (§6.4 step 9).
            painted = swap.inpaint_region(c.inpainter, composed, mi, box, swap.HEAD_PROMPT, swap.HEAD_NEGATIVE,
                                          model_type, 0.9, generator)
            hair_band = np.clip(src_head - src_inner, 0, 1) * mi * (1.0 - settings.hair_strength)
            painted = blend(painted, composed, hair_band)
        with timer.stage("relock"):
            result = swap.relock(c.swapper, painted, face, latent, size, inner, settings.relock_blend)
        with timer.stage("restore"):
            result = swap.restore(c.enhancer, result, face, 0.5, generator)
        region = np.maximum(np.maximum(src_head, target_head), mi)
        return result, region
