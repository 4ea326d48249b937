#!/usr/bin/env python3
"""Per-stage and total time of each endpoint's pipeline, with peak GPU memory and the reduced-precision
output distance (issues #4, #5, #6, "Benchmark"; issue 16).

    python scripts/bench.py all --device cuda --compile --json out.json --budget-s 600
    python scripts/bench.py all --profile tiny --device cpu --json out.json      (the test suite's run)
    python scripts/bench.py expression-editor [--dtype float16] [--runs N] [--warmup N]
    python scripts/bench.py faceswap-v4 --swap-type face head --model-type speed quality
    python scripts/bench.py sadtalker --audio-seconds 10 --image-size 256 512 --enhancer on off [--frames K]

``all`` runs every built endpoint (``pipelines.registry``) at its default parameters, in float32 and,
on CUDA, in the server's default dtype (``auto``: float16 for the pipelines that declare
``half_precision``; ``--dtypes``), resetting the peak-memory counter per case, and compares each
reduced-precision output with the float32 one of the same case and seed. ``--budget-s`` bounds the
whole run: no new step starts after it, and the JSON report is rewritten after every case, so a run
cut short leaves every finished case behind; a case that fails is recorded with its error and the
run goes on (exit status 1 at the end). ``--compile`` adds a sadtalker case with the renderer
under ``torch.compile`` and reports its compile time apart.

``--profile full`` (default) loads every torch network at its official size with deterministic
weights (scripts/bench_weights.py; with ``--sdxl full``, the default on CUDA, SDXL at its real
configs with seeded random weights); files with no full-size source here come from the tiny profile
and the report lists them. Stage times are the pipeline's own (``PipelineResult.info["timings"]``,
StageTimer), medians over ``--runs`` after ``--warmup`` untimed runs. BENCHMARKS.md holds the results.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# The diffusers/transformers load-time notices would bury the table.
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import bench_weights  # noqa: E402
from pipelines import registry  # noqa: E402
from pipelines.base import Audio, LoadOptions  # noqa: E402
from pipelines.expression_editor.face_box import select_face_box  # noqa: E402
from pipelines.sadtalker.pipeline import COMPILE_ENV  # noqa: E402
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
# The server's default dtype setting: float16 on CUDA for the pipelines that declare half_precision.
SERVER_DEFAULT_DTYPE = "auto"
# Video outputs are compared on this many frames spread over the clip.
COMPARED_FRAMES = 25
SEED = 0


@dataclass
class Case:
    """One benchmarked request. ``frames_run``/``frames_total``: sadtalker renders a short clip on CPU
    and scales its per-frame stages to the full clip."""

    endpoint: str
    label: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    new_source: bool = False
    frames_run: int | None = None
    frames_total: int | None = None


@dataclass
class CaseResult:
    endpoint: str
    label: str
    dtype: str
    params: dict[str, Any]
    runs: int
    stages: dict[str, float]
    total: float
    cpu: float  # process CPU seconds: with --device cpu, cpu / total / threads shows how much CPU it got
    first_run: float  # the first (warm-up) call's wall time: includes lazy initialisation and compilation
    peak_memory_bytes: int | None  # torch.cuda.max_memory_allocated over the case (CUDA only)
    load_seconds: float
    samples: list[dict[str, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    extrapolated: dict[str, Any] | None = None
    distance_to_float32: dict[str, float] | None = None
    compile_seconds: float | None = None
    cut_by_budget: bool = False


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


# ---- cases per endpoint: ``all`` sets every option to the protocol's defaults -------------------

def expression_editor_cases(args) -> list[Case]:
    inputs = {"image": astronaut()}
    edit = {} if args.defaults else dict(EDIT)
    kind = "default parameters" if args.defaults else "edit"
    return [Case("expression-editor", f"{kind}, new photo", edit, inputs, new_source=True),
            Case("expression-editor", f"{kind}, same photo (F/M cached)", edit, inputs)]


def faceswap_cases(args) -> list[Case]:
    # 1024x1024 target, 512x512 source; the squares are sized so the tiny SCRFD box is well above the
    # 48 px diffusion threshold (faceswap.md §6.3) at det_size 640.
    inputs = {"source_image": white_square_image(512, 24), "target_image": white_square_image(1024, 48)}
    if args.defaults:
        return [Case("faceswap-v4", "default parameters", {}, inputs)]
    return [Case("faceswap-v4", f"{swap} / {model}",
                 {"swap_type": swap, "model_type": model, "style_type": args.style_type}, inputs)
            for swap in args.swap_type for model in args.model_type]


def sadtalker_cases(args) -> list[Case]:
    frames_total = int(args.audio_seconds * FPS)
    frames_run = min(args.frames or frames_total, frames_total)
    audio = Audio(synthetic_speech(frames_run / FPS), SAMPLE_RATE)
    inputs = {"input_image": astronaut(), "input_audio": audio}
    if args.defaults:
        return [Case("sadtalker", "default parameters", {}, inputs, frames_run=frames_run, frames_total=frames_total)]
    return [Case("sadtalker", f"{size} px, enhancer {enhancer}, {args.preprocess}",
                 {"image_size": size, "enhancer": enhancer == "on", "preprocess": args.preprocess},
                 inputs, frames_run=frames_run, frames_total=frames_total)
            for size in args.image_size for enhancer in args.enhancer]


def face_to_sticker_cases(args) -> list[Case]:
    inputs = {"image": astronaut()}
    if args.profile == "tiny":
        # The tiny profile checks that the script runs: 20 steps at 1024 x 1024 take minutes on a CPU
        # even with a tiny UNet, so the smallest request the protocol allows stands in.
        return [Case("face-to-sticker", "256 x 256, 1 step (tiny profile)", {"width": 256, "height": 256, "steps": 1},
                     inputs)]
    return [Case("face-to-sticker", "default parameters", {}, inputs)]


def consistent_character_cases(args) -> list[Case]:
    return [Case("consistent-character", "default parameters", {}, {"subject": astronaut()})]


# In the order ``all`` runs them: the cheap ones first, so a short budget still covers most endpoints.
CASES: dict[str, Callable[[argparse.Namespace], list[Case]]] = {
    "expression-editor": expression_editor_cases,
    "sadtalker": sadtalker_cases,
    "faceswap-v4": faceswap_cases,
    "face-to-sticker": face_to_sticker_cases,
    "consistent-character": consistent_character_cases,
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


def prepare_untrained(pipeline, endpoint: str, installed: bool) -> dict[str, Any]:
    """Stand-ins where deterministic detectors would make a request meaningless (see the two above);
    real installed weights run untouched. Returns what the report should say about it."""
    if installed:
        return {}
    if endpoint == "expression-editor":
        pipeline.detector = FallbackBoxDetector(pipeline.detector, ASTRONAUT_FACE)
        return {"detector_fallback": pipeline.detector}
    if endpoint == "sadtalker":
        pipeline.models.detector.register_forward_hook(keep_best_face)
        return {"retinaface_best_anchor": True}
    return {}


def stage_seconds(info: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in info.get("timings", {}).items()}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class Budget:
    """The run's wall-clock bound: nothing new starts once it is spent."""

    def __init__(self, seconds: float | None):
        self.deadline = time.monotonic() + seconds if seconds else float("inf")

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline


def output_pixels(result) -> np.ndarray:
    """The output as uint8 pixels (N, H, W, 3): the images, or ``COMPARED_FRAMES`` frames of the video."""
    if result.video is None:
        return np.stack([np.asarray(i, dtype=np.uint8) for i in result.images])
    import cv2

    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(result.video)
        f.flush()
        capture = cv2.VideoCapture(f.name)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
    keep = np.unique(np.linspace(0, len(frames) - 1, min(COMPARED_FRAMES, len(frames))).astype(int))
    return np.stack([frames[i] for i in keep])


def output_distance(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Mean and max absolute difference (0-255) and PSNR (dB) of two uint8 outputs."""
    if reference.shape != other.shape:
        return {"shape_mismatch": 1.0}
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    mse = float((diff ** 2).mean())
    return {"mean_abs": float(diff.mean()), "max_abs": float(diff.max()),
            "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))}


def run_case(pipeline, case: Case, runs: int, warmup: int, device: str, dtype: str, load_seconds: float,
             budget: Budget) -> tuple[CaseResult, np.ndarray | None]:
    """``warmup`` untimed then up to ``runs`` timed calls (fewer when the budget runs out after the
    first timed one); returns the result and the last call's output pixels."""
    params = params_for(case.endpoint, pipeline.params_type, **case.params)
    samples, info, first_run, result = [], {}, None, None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    cut = False
    for index in range(warmup + runs):
        if samples and budget.spent():
            cut = True
            break
        if case.new_source:
            # The pipeline keeps F/M results per source image (expression-editor.md §7.6); emptying
            # that cache makes every run a first edit of the photo.
            pipeline.free_memory()
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        result = pipeline(params, case.inputs, seed=SEED)
        synchronize(device)
        total = time.perf_counter() - start
        first_run = total if first_run is None else first_run
        if index >= warmup:
            samples.append({**stage_seconds(result.info), "total": total, "cpu": time.process_time() - cpu_start})
            info = {k: v for k, v in result.info.items() if k != "timings"}
    stages = {k: statistics.median(s.get(k, 0.0) for s in samples) for k in samples[0] if k not in ("total", "cpu")}
    peak = torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else None
    out = CaseResult(case.endpoint, case.label, dtype, case.params, len(samples), stages,
                     statistics.median(s["total"] for s in samples), statistics.median(s["cpu"] for s in samples),
                     first_run, peak, load_seconds, samples, info, cut_by_budget=cut)
    if case.frames_run is not None and case.frames_run != case.frames_total:
        out.extrapolated = extrapolate(stages, out.total, case.frames_run, case.frames_total)
    return out, output_pixels(result)


def extrapolate(stages: dict[str, float], total: float, frames_run: int, frames_total: int) -> dict[str, Any]:
    """Per-frame stages scaled by frames_total / frames_run; the others (source analysis) kept."""
    factor = frames_total / frames_run
    scaled = {k: (v * factor if k in PER_FRAME_STAGES else v) for k, v in stages.items()}
    per_frame = sum(v for k, v in stages.items() if k in PER_FRAME_STAGES)
    return {"frames_run": frames_run, "frames_total": frames_total, "stages": scaled,
            "total": total + per_frame * (factor - 1), "per_frame": per_frame / frames_run}


def load_pipeline(endpoint: str, weights_dir: Path, device: str, dtype: str, compile_renderer: bool = False):
    """The pipeline and its load time; ``compile_renderer`` sets sadtalker's compile switch for this load."""
    previous = os.environ.pop(COMPILE_ENV, None)
    if compile_renderer:
        os.environ[COMPILE_ENV] = "1"
    try:
        start = time.perf_counter()
        pipeline = registry.pipeline_class(endpoint).load(
            LoadOptions(weights_dir=weights_dir, device=device, dtype=dtype, allow_noncommercial=True))
        synchronize(device)
        return pipeline, time.perf_counter() - start
    finally:
        os.environ.pop(COMPILE_ENV, None)
        if previous is not None:
            os.environ[COMPILE_ENV] = previous


def release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


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


def format_header(report: dict[str, Any]) -> str:
    m = report["machine"]
    return "\n".join([
        f"# {report['endpoint']} - profile {report['profile']}, device {report['device']}"
        f"{' (' + m['gpu'] + ')' if 'gpu' in m else ''}, dtypes {', '.join(report['dtypes'])}",
        f"machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), "
        f"torch {m['torch']}, python {m['python']}",
        f"median of {report['runs']} runs after {report['warmup']} warm-up"
        + (f"; budget {report['budget_s']:.0f} s" if report["budget_s"] else ""),
        "",
    ])


def format_endpoint(slug: str, entry: dict[str, Any], profile: str) -> str:
    lines = [f"## {slug}: weights in {entry['weights_seconds']:.1f} s ({entry['weights_dir']})"]
    tiny = grouped_ids(k for k, v in entry["weights"].items() if v == "tiny")
    if profile == "full" and tiny:
        lines.append("tiny-profile files (no full-size source here): " + ", ".join(tiny))
    if entry.get("detector_fallback"):
        lines.append("detector: run in full; its deterministic weights find no face, so the astronaut's "
                     "face box is used")
    if entry.get("retinaface_best_anchor"):
        lines.append("RetinaFace: run in full; its output is cut to the best anchor (one face per frame)")
    return "\n".join(lines + [""])


def format_case(case: dict[str, Any]) -> str:
    stages = case["stages"]
    width = max([len(k) for k in stages] + [len("total")])
    lines = [f"### {case['endpoint']} - {case['label']} - {case['dtype']}"
             f"{' (cut short by the budget)' if case['cut_by_budget'] else ''}"]
    for name, seconds in stages.items():
        lines.append(f"  {name:<{width}}  {seconds * 1000:10.1f} ms")
    lines.append(f"  {'total':<{width}}  {case['total'] * 1000:10.1f} ms   (process CPU {case['cpu']:.1f} s)")
    extra = [f"load {case['load_seconds']:.1f} s", f"first call {case['first_run']:.2f} s"]
    if case["peak_memory_bytes"] is not None:
        extra.append(f"peak GPU memory {case['peak_memory_bytes'] / 2**30:.2f} GiB")
    if case["compile_seconds"] is not None:
        extra.append(f"compile {case['compile_seconds']:.1f} s")
    if case["distance_to_float32"]:
        d = case["distance_to_float32"]
        extra.append("vs float32: " + ", ".join(f"{k} {v:.3g}" for k, v in d.items()))
    lines.append("  " + "; ".join(extra))
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
    return "\n".join(lines + [""])


def summary_rows(report: dict[str, Any]) -> str:
    """One markdown row per case, for BENCHMARKS.md."""
    rows = ["| endpoint | case | dtype | total (s) | first call (s) | peak GPU memory (GiB) | vs float32 "
            "(mean abs / PSNR dB) | stages (s) |", "|---|---|---|---:|---:|---:|---|---|"]
    for c in report["cases"]:
        total = c["extrapolated"]["total"] if c.get("extrapolated") else c["total"]
        memory = f"{c['peak_memory_bytes'] / 2**30:.2f}" if c["peak_memory_bytes"] is not None else ""
        d = c["distance_to_float32"] or {}
        distance = f"{d['mean_abs']:.3g} / {d['psnr_db']:.1f}" if "mean_abs" in d else ""
        stages = ", ".join(f"{k} {v:.3f}" for k, v in c["stages"].items())
        label = c["label"] + (f", compile {c['compile_seconds']:.0f} s" if c["compile_seconds"] is not None else "")
        rows.append(f"| {c['endpoint']} | {label} | {c['dtype']} | {total:.3f} | {c['first_run']:.2f} | {memory} "
                    f"| {distance} | {stages} |")
    for s in report["skipped"]:
        rows.append(f"| {s['endpoint']} | {s.get('label', '')} | {s.get('dtype', '')} | not run: {s['reason']} "
                    "| | | | |")
    return "\n".join(rows)


def write_report(path: Path | None, report: dict[str, Any]) -> None:
    """The JSON report, replaced atomically (a run cut short keeps the last complete file)."""
    if path is None:
        return
    report["elapsed_s"] = time.perf_counter() - report["_start"]
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=1,
                                  default=str))
    partial.replace(path)


# ---- command line ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("endpoint", choices=["all", *CASES])
    p.add_argument("--profile", choices=("full", "tiny"), default="full",
                   help="full: official sizes, deterministic weights (default); tiny: the tiny profile")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", "--dtype", nargs="+", choices=("float32", "float16", "bfloat16", "auto"),
                   help="default: float32 and the server's default (auto: float16 where the pipeline declares "
                   "half_precision) on CUDA, float32 on CPU")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--budget-s", type=float, help="stop starting new work after this many seconds")
    p.add_argument("--json", type=Path, help="also write the report as JSON here (rewritten after every case)")
    p.add_argument("--weights-dir", type=Path, help="time the files installed here instead (e.g. weights/ "
                   "after scripts/download_weights.py); overrides --profile")
    p.add_argument("--cache-dir", type=Path, help="where the weights are built (default "
                   "$FACEFOUNDRY_BENCH_CACHE or ~/.cache/facefoundry-bench)")
    p.add_argument("--sdxl", choices=("full", "tiny"), help="SDXL at its real size (seeded random weights, "
                   "about 7 GB, built on the device) or the tiny one; default full on CUDA, tiny on CPU")
    p.add_argument("--compile", action="store_true", help="also run sadtalker with the renderer under "
                   "torch.compile, reporting the compile time apart")
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
    cuda = args.device.startswith("cuda")
    if args.dtypes is None:
        args.dtypes = ["float32", SERVER_DEFAULT_DTYPE] if cuda else ["float32"]
    if not cuda and set(args.dtypes) - {"float32", SERVER_DEFAULT_DTYPE}:
        p.error("float16/bfloat16 are CUDA settings (LoadOptions.dtype); CPU runs in float32")
    if args.sdxl is None:
        args.sdxl = "full" if cuda else "tiny"
    if args.frames is None and not cuda:
        args.frames = 8
    if args.frames is not None and args.frames < MIN_FRAMES:
        p.error(f"--frames must be at least {MIN_FRAMES}: sadtalker refuses shorter audio (sadtalker.md §7)")
    args.defaults = args.endpoint == "all"
    return args


def endpoints_to_run(args) -> list[str]:
    if args.endpoint != "all":
        return [args.endpoint]
    return [slug for slug in CASES if registry.is_built(slug)]


def weights_for(slug: str, args) -> Path:
    if args.weights_dir:
        return args.weights_dir
    if args.profile == "tiny":
        return bench_weights.tiny_weights_dir(args.cache_dir)
    return bench_weights.full_weights_dir(slug, args.cache_dir, full_sdxl=args.sdxl == "full", device=args.device)


def record_failure(report: dict[str, Any], slug: str, label: str, dtype: str | None, error: Exception) -> None:
    traceback.print_exception(error)
    report["skipped"].append({"endpoint": slug, "label": label, "dtype": dtype or "",
                              "reason": f"failed: {type(error).__name__}: {error}"[:400]})
    report["failed"] = True


def dtypes_for(slug: str, args) -> list[str]:
    """``--dtypes`` as the server resolves them for ``slug`` (server/pool.py ``resolved_dtype``, not
    imported: it brings the HTTP stack, which a bare GPU machine lacks); "auto" is float32 for a
    pipeline without ``half_precision``, and that dtype then runs once."""
    half = args.device.startswith("cuda") and getattr(registry.pipeline_class(slug), "half_precision", False)
    resolved = [("float16" if half else "float32") if d == SERVER_DEFAULT_DTYPE else d for d in args.dtypes]
    return list(dict.fromkeys(resolved))


def bench_endpoint(slug: str, args, report: dict[str, Any], budget: Budget) -> None:
    """Every case of ``slug`` in every dtype (then the compiled renderer), recording as it goes."""
    start = time.perf_counter()
    weights_dir = weights_for(slug, args)
    entry = report["endpoints"][slug] = {
        "weights_dir": str(weights_dir), "weights_seconds": time.perf_counter() - start,
        "weights": bench_weights.profile_files(weights_dir, slug)}
    cases = CASES[slug](args)
    float32_outputs: dict[str, np.ndarray] = {}
    dtypes = dtypes_for(slug, args)
    variants = [(dtype, False) for dtype in dtypes]
    if args.compile and slug == "sadtalker":
        variants.append((dtypes[0], True))
    plain_load: dict[str, float] = {}
    for dtype, compiled in variants:
        if budget.spent():
            report["skipped"].extend({"endpoint": slug, "label": c.label, "dtype": dtype, "reason": "budget"}
                                     for c in cases)
            continue
        try:
            pipeline, load_seconds = load_pipeline(slug, weights_dir, args.device, dtype, compiled)
        except Exception as error:  # one broken load must not end a GPU lease's only run
            for c in cases:
                record_failure(report, slug, c.label, dtype, error)
            release(args.device)
            continue
        notes = prepare_untrained(pipeline, slug, installed=args.weights_dir is not None)
        for case in cases:
            label = case.label + (", torch.compile renderer" if compiled else "")
            if budget.spent():
                report["skipped"].append({"endpoint": slug, "label": label, "dtype": dtype, "reason": "budget"})
                continue
            try:
                result, pixels = run_case(pipeline, case, args.runs, args.warmup, args.device, dtype, load_seconds,
                                          budget)
            except Exception as error:  # e.g. out of memory in one dtype: the other cases still run
                record_failure(report, slug, label, dtype, error)
                release(args.device)
                continue
            result.label = label
            if dtype == "float32" and not compiled:
                float32_outputs[case.label] = pixels
            elif case.label in float32_outputs:
                result.distance_to_float32 = output_distance(float32_outputs[case.label], pixels)
            if compiled:
                # Compilation happens at load (the CUDA batch sizing runs the renderer) or in the first
                # call: both are compared with the uncompiled load and a timed call.
                result.compile_seconds = (load_seconds - plain_load.get(dtype, load_seconds)
                                          + result.first_run - result.total)
            else:
                plain_load[dtype] = load_seconds
            report["cases"].append(vars(result))
            print(format_case(vars(result)), flush=True)
            write_report(args.json, report)
        entry["detector_fallback"] = bool(getattr(notes.get("detector_fallback"), "used", False))
        entry["retinaface_best_anchor"] = notes.get("retinaface_best_anchor", False)
        del pipeline
        release(args.device)
    print(format_endpoint(slug, entry, args.profile), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    report: dict[str, Any] = {
        "_start": time.perf_counter(), "command": ["scripts/bench.py", *(sys.argv[1:] if argv is None else argv)],
        "endpoint": args.endpoint, "profile": f"installed ({args.weights_dir})" if args.weights_dir else args.profile,
        "sdxl": args.sdxl, "device": args.device, "dtypes": args.dtypes, "runs": args.runs, "warmup": args.warmup,
        "budget_s": args.budget_s, "machine": machine(args.device), "load_average": [os.getloadavg()[0]],
        "endpoints": {}, "cases": [], "skipped": [], "complete": False, "failed": False,
    }
    print(format_header(report), flush=True)
    for slug in endpoints_to_run(args):
        if budget.spent():
            report["skipped"].append({"endpoint": slug, "reason": "budget"})
            continue
        try:
            bench_endpoint(slug, args, report, budget)
        except Exception as error:  # building its weights failed: the other endpoints still run
            record_failure(report, slug, "", None, error)
        write_report(args.json, report)
    report["load_average"].append(os.getloadavg()[0])
    report["complete"] = not report["skipped"]
    write_report(args.json, report)
    print(summary_rows(report))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
