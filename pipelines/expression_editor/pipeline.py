"""``/v1/expression-editor``: the ComfyUI-AdvancedLivePortrait ExpressionEditor node (spec §4).

Data flow: detect the face (YOLOv8n) → square crop → F and M on the 256 crop → source keypoints →
reference expression/pose and slider edits → driving keypoints → stitching → W → G → truncated
uint8 crop → paste-back into the source. The node falls back to the whole image when it finds no
face; this endpoint answers 400 instead (segmind-api.md rule, spec §8).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from pipelines.base import InputError, LoadOptions, PipelineResult, Progress, report_progress
from pipelines.common.component_files import locate_components, torch_dtype
from pipelines.common.timing import StageTimer
from pipelines.common.yolo_detect import YoloDetector
from pipelines.common.yolo_loader import load_yolo_face
from pipelines.expression_editor import editor
from pipelines.expression_editor.editor import MotionInfo, Sliders
from pipelines.expression_editor.face_box import select_face_box
from pipelines.expression_editor.loader import NETWORK_FILES, LivePortraitNetworks, load_liveportrait
from pipelines.expression_editor.params import Params
from pipelines.weights.manifest import load_manifest
from pipelines.weights.policy import component_report

# Weights-manifest entry of each file (spec §3.4).
ENTRY_IDS = {name: f"liveportrait.{name}" for name in NETWORK_FILES} | {"yolov8n_face": "yolov8n_face"}
CACHE_SIZE = 4
# detect, source (+ reference), edit: the boundaries where a cancelled job stops.
STAGES = 3


@dataclass
class PreparedSource:
    """Everything the node derives from the source image once (``LP_Engine.prepare_source``)."""

    region: tuple[int, int, int, int]
    image_m: np.ndarray
    mask: np.ndarray
    info: MotionInfo
    feature: torch.Tensor
    x_s: torch.Tensor


@dataclass
class Edit:
    """One edit's keypoints and images."""

    delta: torch.Tensor
    angles: torch.Tensor
    x_d_pre_stitch: torch.Tensor
    x_d: torch.Tensor
    decoded: torch.Tensor
    crop: np.ndarray
    full: np.ndarray


def content_key(image: np.ndarray, *extra) -> str:
    """Cache key of an image (and whatever else the cached result depends on)."""
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    digest.update(repr((image.shape, extra)).encode())
    return digest.hexdigest()


class ExpressionEditorPipeline:
    name = "expression-editor"
    params_type = Params
    # ``--dtype auto`` on CUDA runs the five networks in float16 (the detector stays float32), as
    # official LivePortrait does by default on CUDA (spec §5, "precision"; the node itself is fp32).
    half_precision = True

    def __init__(self, networks: LivePortraitNetworks, detector: YoloDetector, report: list[dict[str, Any]],
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.networks = networks
        self.detector = detector
        self.report = report
        self.device = torch.device(device)
        self.dtype = dtype
        # F/M results per source image, M per reference image, by content (spec §0 item 9, §7.6).
        self._sources: OrderedDict[str, PreparedSource] = OrderedDict()
        self._references: OrderedDict[str, MotionInfo] = OrderedDict()

    @classmethod
    def load(cls, options: LoadOptions) -> "ExpressionEditorPipeline":
        paths, report = locate_components(cls.name, list(ENTRY_IDS.values()), options)
        files = {name: paths[entry] for name, entry in ENTRY_IDS.items()}
        return cls.from_files(files, options.device, torch_dtype(options.dtype, options.device), report)

    @classmethod
    def from_files(cls, files: Mapping[str, Path], device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32,
                   report: list[dict[str, Any]] | None = None) -> "ExpressionEditorPipeline":
        """``files``: the five LivePortrait names of ``loader.NETWORK_FILES`` and ``yolov8n_face``;
        ``report``: their /ready entries (default: the manifest's for those ids)."""
        if report is None:
            manifest = load_manifest()
            report = component_report([manifest[ENTRY_IDS[name]] for name in files])
        networks = load_liveportrait({n: files[n] for n in NETWORK_FILES}, device, dtype)
        # The detector stays float32 so that its boxes, and with them the crop, match the node.
        detector = YoloDetector(load_yolo_face(files["yolov8n_face"], device))
        return cls(networks, detector, report, device, dtype)

    def components(self) -> list[dict[str, Any]]:
        return self.report

    def free_memory(self) -> None:
        self._sources.clear()
        self._references.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- node steps ------------------------------------------------------------------------

    def face_box(self, image: np.ndarray, what: str = "image"):
        """The node's chosen face box; InputError when there is none."""
        box = select_face_box(self.detector.detect(image)[:, :4], image.shape[1])
        if box is None:
            raise InputError(f"no face detected in {what}")
        return box

    def _to_network(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def motion(self, face: np.ndarray) -> MotionInfo:
        out = self.networks.motion(self._to_network(editor.network_input(face)))
        return editor.motion_info({k: v.float().cpu() for k, v in out.items()})

    @torch.no_grad()
    def prepare_source(self, image: np.ndarray, box) -> PreparedSource:
        key = content_key(image, box)
        if key in self._sources:
            self._sources.move_to_end(key)
            return self._sources[key]
        image_wh = (image.shape[1], image.shape[0])
        region = editor.crop_region(box, image_wh)
        mask_m, image_m = editor.crop_transforms(region, image_wh)
        face = editor.face_crop(image, region)
        info = self.motion(face)
        feature = self.networks.appearance(self._to_network(editor.network_input(face)))
        prepared = PreparedSource(region, image_m, editor.source_mask(mask_m, image_wh), info, feature,
                                  editor.source_keypoints(info))
        self._remember(self._sources, key, prepared)
        return prepared

    @torch.no_grad()
    def reference_motion(self, image: np.ndarray, box) -> MotionInfo:
        key = content_key(image, box)
        if key not in self._references:
            # The reference crop always uses the node's default factor (§4.2).
            region = editor.crop_region(box, (image.shape[1], image.shape[0]), editor.CROP_FACTOR)
            self._remember(self._references, key, self.motion(editor.face_crop(image, region)))
        self._references.move_to_end(key)
        return self._references[key]

    @staticmethod
    def _remember(cache: OrderedDict, key: str, value) -> None:
        cache[key] = value
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)

    @torch.no_grad()
    def edit(self, source: PreparedSource, source_image: np.ndarray, sliders: Sliders,
             reference: MotionInfo | None = None, sample_parts: str = "OnlyExpression",
             timer: StageTimer | None = None) -> Edit:
        timer = timer or StageTimer(self.device.type)
        with timer.stage("keypoints"):
            delta = torch.zeros_like(source.info.exp)
            angles = editor.command_angles(sliders)
            if reference is not None:
                ref_pose = (reference.pitch, reference.yaw, reference.roll)
                editor.reference_edit(delta, angles, editor.reference_expression(reference.exp), ref_pose,
                                      sample_parts)
            angles = editor.slider_edit(delta, angles, sliders)
            x_d_pre = editor.driving_keypoints(source.info, editor.expression_base(source.info), delta, angles)
            x_d = editor.stitched(self.networks.stitching, self._to_network(source.x_s), self._to_network(x_d_pre))
        with timer.stage("warp"):
            warped = self.networks.warping(source.feature, kp_driving=x_d, kp_source=self._to_network(source.x_s))
        with timer.stage("decode"):
            decoded = self.networks.spade(feature=warped["out"]).float().cpu()
        with timer.stage("paste"):
            crop = editor.truncated_u8(decoded)
            full = editor.paste_back(crop, source_image, source.image_m, source.mask)
        return Edit(delta, angles, x_d_pre, x_d.float().cpu(), decoded, crop, full)

    def __call__(self, params: Params, inputs: Mapping[str, Any], seed: int,
                 progress: Progress | None = None) -> PipelineResult:
        """Deterministic: ``seed`` is not used (the node draws nothing at random)."""
        image = inputs.get("image")
        if image is None:
            raise InputError("image is required")
        timer = StageTimer(self.device.type)
        with timer.stage("detect"):
            box = self.face_box(image)
        report_progress(progress, 1, STAGES)
        # F and M; near zero when the same photo was edited recently (cached, spec §7.6).
        with timer.stage("source"):
            source = self.prepare_source(image, box)
        ref_image = inputs.get("ref_expression_image")
        reference = None
        if ref_image is not None:
            with timer.stage("reference"):
                reference = self.reference_motion(ref_image, self.face_box(ref_image, "ref_expression_image"))
        report_progress(progress, 2, STAGES)
        result = self.edit(source, image, Sliders.from_params(params), reference, params.sample_parts, timer)
        report_progress(progress, 3, STAGES)
        return PipelineResult(images=[result.crop if params.output == "crop" else result.full],
                              info={"crop_region": list(source.region), "timings": timer.seconds})
