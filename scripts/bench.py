#!/usr/bin/env python3
"""Per-stage and total time of one request to an endpoint's pipeline (issues #4, #5, #6, "Benchmark").

    python scripts/bench.py expression-editor [--profile full|tiny] [--device cpu|cuda]
        [--dtype float32|float16|bfloat16] [--runs N] [--warmup N] [--json out.json]
    python scripts/bench.py faceswap-v4 --swap-type face head --model-type speed quality
    python scripts/bench.py sadtalker --audio-seconds 10 --image-size 256 512 --enhancer on off [--frames K]

``--profile full`` (default) loads every torch network at its official size with deterministic
weights (scripts/bench_weights.py); files with no full-size source here come from the tiny profile
and the report lists them. Stage times are the pipeline's own (``PipelineResult.info["timings"]``,
StageTimer), medians over ``--runs`` after ``--warmup`` untimed runs. BENCHMARKS.md holds the results.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# The diffusers/transformers load-time notices would bury the table.
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import bench_weights  # noqa: E402
from pipelines.base import Audio, LoadOptions  # noqa: E402
from pipelines.expression_editor.face_box import select_face_box  # noqa: E402
from pipelines.registry import pipeline_class  # noqa: E402
from server.protocol import params_for  # noqa: E402

SAMPLE_RATE = 16000
FPS = 25
# Where the astronaut's face is (xyxy px in skimage.data.astronaut()), for detectors whose
# deterministic weights find none (see FallbackBoxDetector).
ASTRONAUT_FACE = (170.0, 40.0, 290.0, 190.0)
# A representative edit: a head turn, a blink, a raised brow, an open mouth and a smile. The
# networks' cost does not depend on the slider values.
EDIT = {"rotate_pitch": 0, "rotate_yaw": 10, "rotate_roll": 0, "blink": -5, "eyebrow": 5, "wink": 0,
        "pupil_x": 0, "pupil_y": 0, "aaa": 20, "eee": 0, "woo": 0, "smile": 0.6}
# The Savitzky-Golay pose smoothing needs a window above its order 2 (audio.audio_features).
MIN_FRAMES = 3
# Stages whose work is one unit per video frame: scaled from the rendered frames to the whole clip.
PER_FRAME_STAGES = ("audio", "coefficients", "render", "paste", "enhance", "encode")


@dataclass
class Case:
    """One benchmarked request. ``frames_run``/``frames_total``: sadtalker renders a short clip on CPU
    and scales its per-frame stages to the full clip."""

    label: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    new_source: bool = False
    frames_run: int | None = None
    frames_total: int | None = None


@dataclass
class CaseResult:
    label: str
    params: dict[str, Any]
    runs: int
    stages: dict[str, float]
    total: float
    cpu: float  # process CPU seconds: with --device cpu, cpu / total / threads shows how much CPU it got
    samples: list[dict[str, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    extrapolated: dict[str, Any] | None = None


# ---- inputs ------------------------------------------------------------------------------------

def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def white_square_image(size: int, square: int) -> np.ndarray:
    """Black with one centred white square: the face the tiny SCRFD finds (faceswap.md §9.4)."""
    image = np.zeros((size, size, 3), np.uint8)
    low = (size - square) // 2
    image[low:low + square, low:low + square] = 255
    return image


def synthetic_speech(seconds: float) -> np.ndarray:
    """A voiced-sounding signal (140 Hz harmonics under a 4 Hz syllable envelope); timing does not
    depend on what is said."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    return (0.2 * voice * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


# ---- cases per endpoint -------------------------------------------------------------------------

def expression_editor_cases(args) -> list[Case]:
    inputs = {"image": astronaut()}
    return [Case("edit, new photo", dict(EDIT), inputs, new_source=True),
            Case("edit, same photo (F/M cached)", dict(EDIT), inputs)]


def faceswap_cases(args) -> list[Case]:
    # 1024x1024 target, 512x512 source; the squares are sized so the tiny SCRFD box is well above the
    # 48 px diffusion threshold (faceswap.md §6.3) at det_size 640.
    inputs = {"source_image": white_square_image(512, 24), "target_image": white_square_image(1024, 48)}
    return [Case(f"{swap} / {model}", {"swap_type": swap, "model_type": model, "style_type": args.style_type},
                 inputs)
            for swap in args.swap_type for model in args.model_type]


def sadtalker_cases(args) -> list[Case]:
    frames_total = int(args.audio_seconds * FPS)
    frames_run = min(args.frames or frames_total, frames_total)
    audio = Audio(synthetic_speech(frames_run / FPS), SAMPLE_RATE)
    inputs = {"input_image": astronaut(), "input_audio": audio}
    return [Case(f"{size} px, enhancer {enhancer}, {args.preprocess}",
                 {"image_size": size, "enhancer": enhancer == "on", "preprocess": args.preprocess},
                 inputs, frames_run=frames_run, frames_total=frames_total)
            for size in args.image_size for enhancer in args.enhancer]


CASES: dict[str, Callable] = {
    "expression-editor": expression_editor_cases,
    "faceswap-v4": faceswap_cases,
    "sadtalker": sadtalker_cases,
}


# ---- running -------------------------------------------------------------------------------------

class FallbackBoxDetector:
    """The expression editor's detector, run in full, with the astronaut's face box returned when
    its deterministic (untrained) weights find no face: the network's time is what is measured."""

    def __init__(self, detector, box: tuple[float, float, float, float]):
        self.detector = detector
        self.box = np.array([[*box, 1.0, 0.0]], dtype=np.float32)
        self.used = False

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        found = self.detector.detect(image_rgb)
        if select_face_box(found[:, :4], image_rgb.shape[1]) is not None:
            return found
        self.used = True
        return self.box


def keep_best_face(module, inputs, outputs):
    """RetinaFace forward hook: each image's best-scoring anchor becomes a sure face, every other
    anchor none. Untrained weights fire on most anchors (shared/parity/README.md §8), which would
    hand the enhancer hundreds of faces per frame; a talking-head frame holds one."""
    loc, conf, landms = outputs
    rows, best = torch.arange(conf.shape[0]), conf[..., 1].argmax(dim=1)
    one = torch.zeros_like(conf)
    one[..., 0] = 1.0
    one[rows, best] = torch.tensor([0.0, 1.0], dtype=conf.dtype, device=conf.device)
    return loc, one, landms


def stage_seconds(info: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in info.get("timings", {}).items()}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_case(pipeline, case: Case, runs: int, warmup: int, device: str) -> CaseResult:
    samples, info = [], {}
    params = params_for(pipeline.name, pipeline.params_type, **case.params)
    for index in range(warmup + runs):
        if case.new_source:
            # The pipeline keeps F/M results per source image (expression-editor.md §7.6); emptying
            # that cache makes every run a first edit of the photo.
            pipeline.free_memory()
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = pipeline(params, case.inputs, seed=index)
        synchronize(device)
        total = time.perf_counter() - start
        if index >= warmup:
            samples.append({**stage_seconds(result.info), "total": total,
                            "cpu": time.process_time() - cpu_start})
            info = {k: v for k, v in result.info.items() if k != "timings"}
    stages = {k: statistics.median(s.get(k, 0.0) for s in samples) for k in samples[0] if k not in ("total", "cpu")}
    out = CaseResult(case.label, case.params, runs, stages, statistics.median(s["total"] for s in samples),
                     statistics.median(s["cpu"] for s in samples), samples, info)
    if case.frames_run is not None and case.frames_run != case.frames_total:
        out.extrapolated = extrapolate(stages, out.total, case.frames_run, case.frames_total)
    return out


def extrapolate(stages: dict[str, float], total: float, frames_run: int, frames_total: int) -> dict[str, Any]:
    """Per-frame stages scaled by frames_total / frames_run; the others (source analysis) kept."""
    factor = frames_total / frames_run
    scaled = {k: (v * factor if k in PER_FRAME_STAGES else v) for k, v in stages.items()}
    per_frame = sum(v for k, v in stages.items() if k in PER_FRAME_STAGES)
    return {"frames_run": frames_run, "frames_total": frames_total, "stages": scaled,
            "total": total + per_frame * (factor - 1), "per_frame": per_frame / frames_run}


# ---- report --------------------------------------------------------------------------------------

def machine(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(device)
        out["cuda"] = torch.version.cuda
    return out


def grouped_ids(ids) -> list[str]:
    """Manifest ids with the many ``sdxl.base.*`` files of one folder shown as one item."""
    ids = sorted(ids)
    sdxl = [i for i in ids if i.startswith("sdxl.base.")]
    rest = [i for i in ids if not i.startswith("sdxl.base.")]
    return rest + ([f"sdxl.base.* ({len(sdxl)} files)"] if sdxl else [])


def format_table(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# {report['endpoint']} - profile {report['profile']}, device {report['device']}"
        f"{' (' + m['gpu'] + ')' if 'gpu' in m else ''}, dtype {report['dtype']}",
        f"machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), "
        f"torch {m['torch']}, python {m['python']}",
        f"load average (1 min) before/after: {report['load_average'][0]:.2f} / {report['load_average'][1]:.2f}; "
        f"pipeline load {report['load_seconds']:.1f} s; median of {report['runs']} runs after "
        f"{report['warmup']} warm-up",
    ]
    tiny = grouped_ids(k for k, v in report["weights"].items() if v == "tiny")
    if report["profile"] == "full" and tiny:
        lines.append("tiny-profile files (no full-size deterministic source here): " + ", ".join(tiny))
    if report.get("detector_fallback"):
        lines.append("detector: run in full; its deterministic weights find no face, so the astronaut's "
                     "face box is used")
    if report["endpoint"] == "sadtalker" and report["profile"] in ("full", "tiny"):
        lines.append("RetinaFace: run in full; its output is cut to the best anchor (one face per frame)")
    lines.append("")
    for case in report["cases"]:
        stages = case["stages"]
        lines.append(f"## {case['label']}")
        width = max([len(k) for k in stages] + [len("total")])
        for name, seconds in stages.items():
            lines.append(f"  {name:<{width}}  {seconds * 1000:10.1f} ms")
        lines.append(f"  {'total':<{width}}  {case['total'] * 1000:10.1f} ms   (process CPU {case['cpu']:.1f} s)")
        shown = {k: v for k, v in case["info"].items() if isinstance(v, (int, float, str, bool))}
        if shown:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        ext = case.get("extrapolated")
        if ext:
            lines.append(f"  extrapolated from {ext['frames_run']} to {ext['frames_total']} frames "
                         f"({ext['per_frame'] * 1000:.1f} ms per frame in {', '.join(PER_FRAME_STAGES)}):")
            for name, seconds in ext["stages"].items():
                lines.append(f"    {name:<{width}}  {seconds:10.2f} s")
            lines.append(f"    {'total':<{width}}  {ext['total']:10.2f} s")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("endpoint", choices=sorted(CASES))
    p.add_argument("--profile", choices=("full", "tiny"), default="full",
                   help="full: official sizes, deterministic weights (default); tiny: the tiny profile")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    p.add_argument("--weights-dir", type=Path, help="time the files installed here instead (e.g. weights/ "
                   "after scripts/download_weights.py); overrides --profile")
    p.add_argument("--cache-dir", type=Path, help="where the weights are built (default "
                   "$FACEFOUNDRY_BENCH_CACHE or ~/.cache/facefoundry-bench)")
    fs = p.add_argument_group("faceswap-v4")
    fs.add_argument("--swap-type", nargs="+", choices=("face", "head"), default=["face", "head"])
    fs.add_argument("--model-type", nargs="+", choices=("speed", "quality"), default=["speed", "quality"])
    fs.add_argument("--style-type", choices=("normal", "style"), default="normal")
    st = p.add_argument_group("sadtalker")
    st.add_argument("--audio-seconds", type=float, default=10.0)
    st.add_argument("--image-size", nargs="+", type=int, choices=(256, 512), default=[256])
    st.add_argument("--enhancer", nargs="+", choices=("on", "off"), default=["on"])
    st.add_argument("--preprocess", default="full", choices=("crop", "extcrop", "resize", "full", "extfull"))
    st.add_argument("--frames", type=int, help="render only this many frames and scale the per-frame "
                    "stages to the whole clip (default: 8 on CPU, every frame on CUDA)")
    args = p.parse_args(argv)
    if args.dtype != "float32" and not args.device.startswith("cuda"):
        p.error("float16/bfloat16 are CUDA settings (LoadOptions.dtype); CPU runs in float32")
    if args.frames is None and not args.device.startswith("cuda"):
        args.frames = 8
    if args.frames is not None and args.frames < MIN_FRAMES:
        p.error(f"--frames must be at least {MIN_FRAMES}: sadtalker refuses shorter audio (sadtalker.md §7)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.weights_dir:
        weights_dir, args.profile = args.weights_dir, f"installed ({args.weights_dir})"
    elif args.profile == "tiny":
        weights_dir = bench_weights.tiny_weights_dir(args.cache_dir)
    else:
        weights_dir = bench_weights.full_weights_dir(args.endpoint, args.cache_dir)
    load_average = [os.getloadavg()[0]]
    start = time.perf_counter()
    pipeline = pipeline_class(args.endpoint).load(
        LoadOptions(weights_dir=weights_dir, device=args.device, dtype=args.dtype, allow_noncommercial=True))
    load_seconds = time.perf_counter() - start
    fallback = None
    if args.endpoint == "expression-editor":
        fallback = pipeline.detector = FallbackBoxDetector(pipeline.detector, ASTRONAUT_FACE)
    if args.endpoint == "sadtalker" and args.weights_dir is None:
        pipeline.models.detector.register_forward_hook(keep_best_face)
    results = [run_case(pipeline, case, args.runs, args.warmup, args.device) for case in CASES[args.endpoint](args)]
    load_average.append(os.getloadavg()[0])
    report = {
        "endpoint": args.endpoint, "profile": args.profile, "device": args.device, "dtype": args.dtype,
        "runs": args.runs, "warmup": args.warmup, "machine": machine(args.device), "load_average": load_average,
        "load_seconds": load_seconds, "weights_dir": str(weights_dir),
        "weights": bench_weights.profile_files(weights_dir, args.endpoint),
        "detector_fallback": bool(fallback and fallback.used),
        "cases": [vars(r) for r in results],
    }
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
