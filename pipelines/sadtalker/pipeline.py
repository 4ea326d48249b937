"""``/v1/sadtalker``: one photo + speech -> a talking-head mp4 (spec sadtalker.md §2, §5).

Reads top to bottom as the data flow: audio front-end (§5.2; first, so that bad audio fails cheaply)
-> source analysis (§5.3, §5.4) -> ExpNet + PoseVAE -> smoothing and render targets (§5.5, §5.6) -> batched rendering (§5.7) ->
paste-back for full/extfull (§5.9) -> GFPGAN enhancer (§5.10) -> one H.264 + AAC encode (§5.8, §5.11).
Frames stream from the renderer through the post-processing into ffmpeg one batch at a time.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import cv2
import numpy as np
import torch

from ..base import Audio, InputError, LoadOptions, PipelineResult, Progress, report_progress
from ..common.component_files import locate_components
from ..common.face_loader import load_fan, load_retinaface
from ..common.face_restore import FaceEnhancer
from ..common.face_restore_loader import load_gfpgan, load_parsenet
from ..common.fan_awing import FAN
from ..common.retinaface import RetinaFace, detect_faces
from ..common.timing import StageTimer
from .align import CropInfo, load_lm3d
from .animate import make_animation
from .audio import audio_features
from .batching import BatchSizes, measure_batch_sizes
from .coeff_loader import (CoefficientNets, load_expnet, load_mapping_net, load_pose_vae, load_recon_net,
                           read_bundle)
from .coefficients import blink_schedule, generated_coefficients
from .config import AUDIO, COEFF_EXP, COEFF_POSE
from .facerender_batch import facerender_inputs
from .mapping_net import MappingNet
from .params import Params
from .paste import paste_frame
from .preprocess import SourceFace, analyse_source, is_full_frame
from .render_loader import RenderNetworks, load_render_networks
from .video import (FPS, crop_aspect_size, encode_mp4, even_size, macro_block_size, predictions_to_uint8,
                    resize_frame)

SLUG = "sadtalker"
# GFPGANer's settings in SadTalker's enhancer (§5.10): x2 output, RetinaFace threshold 0.97, faces
# whose eyes are closer than 5 px skipped.
ENHANCER_UPSCALE = 2
ENHANCER_DETECTION_THRESHOLD = 0.97
ENHANCER_MIN_EYE_DISTANCE = 5.0
# Upstream's size rounding is ffmpeg's scale filter, bicubic by default (§5.7 step 4, §11 point 2).
STRETCH = cv2.INTER_CUBIC
COMPILE_ENV = "FACEFOUNDRY_SADTALKER_COMPILE"


@dataclass(frozen=True)
class SadTalkerSettings:
    """Batch sizes (None: ``batching.BatchSizes``' rule, from free memory on CUDA) and whether the
    renderer's per-frame pass goes through ``torch.compile`` (env ``FACEFOUNDRY_SADTALKER_COMPILE=1``)."""

    render_batch_size: int | None = None
    enhance_batch_size: int | None = None
    compile_renderer: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "SadTalkerSettings":
        return cls(compile_renderer=environ.get(COMPILE_ENV, "").strip().lower() in ("1", "true", "yes", "on"))


@dataclass
class SizeModels:
    """The networks of one bundle (SadTalker_V0.0.2_{256,512}.safetensors)."""

    coeff: CoefficientNets
    render: RenderNetworks


@dataclass
class SadTalkerModels:
    bundles: dict[int, SizeModels]
    mapping: dict[bool, MappingNet]  # keyed by full_frame: 73-d for full/extfull, 70-d otherwise (§3.5)
    detector: RetinaFace
    fan: FAN
    lm3d: np.ndarray
    enhancer: FaceEnhancer


@dataclass
class RequestStreams:
    """One independent stream per random consumer (spec, Decisions), so skipping a stage (still
    mode, enhancer off) leaves the others' draws unchanged; all on the CPU, so a seed gives the
    same video on every device."""

    blink: np.random.Generator
    pose: torch.Generator
    enhancer: torch.Generator


def request_streams(seed: int) -> RequestStreams:
    blink, pose, enhancer = np.random.SeedSequence(seed).spawn(3)

    def torch_stream(seq: np.random.SeedSequence) -> torch.Generator:
        return torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0]))

    return RequestStreams(np.random.default_rng(blink), torch_stream(pose), torch_stream(enhancer))


# audio, source analysis, coefficients: the boundaries before rendering where a cancelled job stops;
# then one after each renderer batch.
STAGES_BEFORE_RENDER = 3


@dataclass(frozen=True)
class FramePlan:
    """How a rendered S x S frame becomes an output frame (§5.7 step 3, §5.9, §5.10, §5.11)."""

    crop_size: tuple[int, int]          # (S, int(S h / w)): the crop video
    output_size: tuple[int, int]        # the encoded size
    paste_box: tuple[int, int, int, int] | None  # full/extfull: where the crop goes in the original
    enhance: bool

    @classmethod
    def for_request(cls, request: Params, crop_info: CropInfo, original_shape: tuple[int, ...]) -> "FramePlan":
        crop_size = crop_aspect_size(request.image_size, crop_info.size)
        up = ENHANCER_UPSCALE if request.enhancer else 1
        if is_full_frame(request.preprocess):
            height, width = original_shape[:2]
            size = macro_block_size((up * width, up * height)) if request.enhancer else even_size((width, height))
            return cls(crop_size, size, crop_info.paste_box, request.enhancer)
        width, height = macro_block_size(crop_size)
        return cls(crop_size, (up * width, up * height), None, request.enhancer)


@dataclass
class RunStats:
    """Per-request wall time by stage (streamed stages interleave with the encode) and face count."""

    timer: StageTimer
    enhanced_faces: int = 0

    def timed(self, stage: str):
        return self.timer.stage(stage)


class SadTalkerPipeline:
    name = SLUG
    params_type = Params
    FILES = {
        256: "sadtalker.bundle_256",
        512: "sadtalker.bundle_512",
        "mapping_crop": "sadtalker.mapping_00229",
        "mapping_full": "sadtalker.mapping_00109",
        "lm3d": "sadtalker.similarity_lm3d_all",
        "detector": "facexlib.retinaface_r50",
        "fan": "facexlib.awing_fan",
        "gfpgan": "gfpgan_v1.4",
        "parser": "facexlib.parsenet",
    }

    def __init__(self, models: SadTalkerModels, report: list[dict], batches: BatchSizes,
                 max_audio_seconds: float = math.inf):
        self.models = models
        self.report = report
        self.batches = batches
        self.device = batches.device
        self.max_audio_seconds = max_audio_seconds

    @classmethod
    def load(cls, options: LoadOptions, settings: SadTalkerSettings | None = None) -> "SadTalkerPipeline":
        """Both bundles at load (fp32; reduced precision is not measured against the fixtures, §6),
        so no request waits for a 725 MB read and a missing file fails at start-up. On CUDA the
        renderer and enhancer then run once on blank input to size their batches (and to compile
        a compiled renderer before the first request)."""
        settings = SadTalkerSettings.from_environ() if settings is None else settings
        paths, report = locate_components(SLUG, list(cls.FILES.values()), options)
        path = {role: paths[entry] for role, entry in cls.FILES.items()}
        device = options.device
        bundles = {}
        for size in (256, 512):
            bundle = read_bundle(path[size])
            coeff = CoefficientNets(load_expnet(path[size], bundle).to(device),
                                    load_pose_vae(path[size], bundle).to(device),
                                    load_recon_net(path[size], bundle).to(device))
            render = load_render_networks(path[size], bundle, device)
            if settings.compile_renderer:
                render.generator.render = torch.compile(render.generator.render)
            bundles[size] = SizeModels(coeff=coeff, render=render)
        parser = load_parsenet(path["parser"], device)
        models = SadTalkerModels(
            bundles=bundles,
            mapping={False: load_mapping_net(path["mapping_crop"], False).to(device),
                     True: load_mapping_net(path["mapping_full"], True).to(device)},
            detector=load_retinaface(path["detector"], device),
            fan=load_fan(path["fan"], device),
            lm3d=load_lm3d(path["lm3d"].parent),
            enhancer=FaceEnhancer(load_gfpgan(path["gfpgan"], device), parser),
        )
        batches = measure_batch_sizes({size: b.render for size, b in bundles.items()}, models.mapping[True],
                                      models.enhancer, device, settings.render_batch_size, settings.enhance_batch_size)
        return cls(models, report, batches, options.max_audio_seconds)

    def components(self) -> list[dict]:
        return self.report

    def free_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def __call__(self, params: Params, inputs: Mapping[str, Any], seed: int,
                 progress: Progress | None = None) -> PipelineResult:
        request = params
        if request.image_size not in self.models.bundles:
            raise InputError(f"image_size must be one of {sorted(self.models.bundles)}, got {request.image_size}")
        audio: Audio = inputs["input_audio"]
        image = np.ascontiguousarray(inputs["input_image"])
        streams = request_streams(seed)
        nets = self.models.bundles[request.image_size]
        stats = RunStats(StageTimer(self.device))

        with torch.inference_mode(), stats.timed("audio"):
            indiv_mels, num_frames = audio_features(self.checked_samples(audio))
        frames_per_batch = self.batches.render(request.image_size)
        total = STAGES_BEFORE_RENDER + math.ceil(num_frames / frames_per_batch)
        report_progress(progress, 1, total)
        with torch.inference_mode(), stats.timed("source"):
            source = analyse_source(self.models.detector, self.models.fan, nets.coeff.recon_net, self.models.lm3d,
                                    image, request.preprocess, request.image_size)
        report_progress(progress, 2, total)
        with torch.inference_mode(), stats.timed("coefficients"):
            generated = self.audio_to_coefficients(nets.coeff, indiv_mels, source.coeff, request, streams)
        report_progress(progress, 3, total)

        plan = FramePlan.for_request(request, source.crop_info, image.shape)
        frames = self.output_frames(nets.render, source, generated, request, plan, image, streams, stats,
                                    frames_per_batch,
                                    lambda batch: report_progress(progress, STAGES_BEFORE_RENDER + batch, total))
        start = time.perf_counter()
        video = encode_mp4(frames, plan.output_size, audio.samples, audio.sample_rate, num_frames)
        # Rendering, paste-back and enhancing run inside the encode loop (streamed); the rest is ffmpeg.
        seconds = stats.timer.seconds
        streamed = sum(seconds.get(k, 0.0) for k in ("render", "paste", "enhance"))
        seconds["encode"] = time.perf_counter() - start - streamed
        return PipelineResult(video=video, info={
            "frames": num_frames, "fps": FPS, "width": plan.output_size[0], "height": plan.output_size[1],
            "preprocess": request.preprocess, "image_size": request.image_size, "still": request.still,
            "enhancer": request.enhancer, "enhanced_faces": stats.enhanced_faces,
            "timings": stats.timer.seconds,
        })

    def checked_samples(self, audio: Audio) -> np.ndarray:
        """The 16 kHz mono samples, refused above the configured duration (spec §7)."""
        if audio.sample_rate != AUDIO["sample_rate"]:
            raise ValueError(f"expected {AUDIO['sample_rate']} Hz audio from the server, got {audio.sample_rate}")
        duration = len(audio.samples) / audio.sample_rate
        if duration > self.max_audio_seconds:
            raise InputError(f"input_audio is too long ({duration:.1f} s; maximum {self.max_audio_seconds:g} s)")
        return np.asarray(audio.samples, dtype=np.float32)

    def audio_to_coefficients(self, nets: CoefficientNets, indiv_mels: np.ndarray, source_coeff: np.ndarray,
                              request: Params, streams: RequestStreams) -> np.ndarray:
        """(N, 70) expression | smoothed pose (§5.5). In still mode the pose is replaced by the
        source's later (§5.6 step 3), so PoseVAE is skipped (§5.5 step 4)."""
        device = self.device
        mels = torch.from_numpy(indiv_mels).to(device)
        coeff = torch.from_numpy(source_coeff).to(device)
        blink = torch.from_numpy(blink_schedule(len(indiv_mels), streams.blink)).to(device)
        frames_per_batch = self.batches.audio()
        exp = nets.expnet.expression_sequence(mels, coeff[COEFF_EXP], blink, frames_per_batch).float().cpu().numpy()
        if request.still:
            pose = np.repeat(source_coeff[None, COEFF_POSE], len(indiv_mels), axis=0)
        else:
            z = nets.pose_vae.draw_noise(len(indiv_mels), streams.pose).to(device)
            pose = nets.pose_vae.pose_sequence(mels, coeff[COEFF_POSE], request.pose_style, z,
                                               frames_per_batch).float().cpu().numpy()
        return generated_coefficients(exp, pose)

    def output_frames(self, render: RenderNetworks, source: SourceFace, generated: np.ndarray, request: Params,
                      plan: FramePlan, image: np.ndarray, streams: RequestStreams,
                      stats: RunStats, frames_per_batch: int,
                      batch_done: Callable[[int], None]) -> Iterator[np.ndarray]:
        """Final frames in order, ``frames_per_batch`` per renderer call (§5.6-§5.11); ``batch_done(n)``
        after the n-th batch's frames went to the encoder."""
        full_frame = is_full_frame(request.preprocess)
        batch = facerender_inputs(source.coeff, generated, source.picture, request.expression_scale, full_frame,
                                  request.still)
        device = self.device
        renders = make_animation(batch.source_image.to(device), batch.source_semantics.to(device),
                                 batch.target_semantics.to(device), render.kp_detector, self.models.mapping[full_frame],
                                 render.generator, frames_per_batch)
        for batch_index in itertools.count(1):
            with torch.inference_mode(), stats.timed("render"):
                prediction = next(renders, None)
                if prediction is None:
                    return
                frames = [self.crop_video_frame(f, plan) for f in predictions_to_uint8(prediction.float().cpu().numpy())]
            if plan.paste_box is not None:
                with stats.timed("paste"):
                    frames = [paste_frame(f, image, plan.paste_box) for f in frames]
            if plan.enhance:
                with torch.inference_mode(), stats.timed("enhance"):
                    frames = self.enhance(frames, streams.enhancer, stats)
            yield from (resize_frame(f, plan.output_size, STRETCH) for f in frames)
            batch_done(batch_index)

    @staticmethod
    def crop_video_frame(frame: np.ndarray, plan: FramePlan) -> np.ndarray:
        """A rendered S x S frame as upstream's crop video holds it: cv2-resized to the face box's aspect
        (§5.7 step 3), then stretched to multiples of 16 by the writer (§5.7 step 4). The paste-back
        and the enhancer read that video back, so both start from this frame (§5.9 step 1, §5.10 step 1)."""
        return resize_frame(resize_frame(frame, plan.crop_size), macro_block_size(plan.crop_size), STRETCH)

    def enhance(self, frames: list[np.ndarray], generator: torch.Generator, stats: RunStats) -> list[np.ndarray]:
        """GFPGAN on every detected face of every frame, x2 Lanczos background (§5.10)."""
        kps = []
        for frame in frames:
            faces = detect_faces(self.models.detector, frame, ENHANCER_DETECTION_THRESHOLD)
            kps.append([lm for lm in faces.landmarks
                        if np.linalg.norm(lm[0] - lm[1]) >= ENHANCER_MIN_EYE_DISTANCE])
        stats.enhanced_faces += sum(len(k) for k in kps)
        enhancer = dataclasses.replace(self.models.enhancer, batch_size=self.batches.enhance())
        return enhancer.enhance(frames, kps, generator, upscale=ENHANCER_UPSCALE)
