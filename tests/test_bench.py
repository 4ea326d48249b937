"""scripts/bench.py: ``all`` end to end on the tiny profile (so the GPU run never meets a broken
script), the budget, the output distance, the per-frame extrapolation, and the full-profile writers'
official layouts and configurations (the small files only: the others are hundreds of MB)."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import registry
from pipelines.base import PipelineResult

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield importlib.import_module("bench")
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def bench_weights(bench):
    return importlib.import_module("bench_weights")


def test_all_on_the_tiny_profile_measures_every_built_endpoint(bench, tiny_weights, tmp_path):
    out = tmp_path / "report.json"
    # The session's tiny profile lies in <cache>/tiny, where the bench looks for it.
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "all", "--profile", "tiny", "--device", "cpu", "--runs", "1",
         "--warmup", "0", "--frames", "3", "--cache-dir", str(tiny_weights.parent), "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    expected = [slug for slug in bench.CASES if registry.is_built(slug)]
    assert list(report["endpoints"]) == expected
    assert report["complete"] and not report["skipped"]
    assert report["dtypes"] == ["float32"]
    assert {c["endpoint"] for c in report["cases"]} == set(expected)
    for case in report["cases"]:
        assert case["dtype"] == "float32" and case["runs"] == 1
        assert case["stages"] and case["total"] >= sum(case["stages"].values()) * 0.99
        assert case["peak_memory_bytes"] is None  # a CUDA measurement
        assert case["load_seconds"] > 0 and case["first_run"] > 0
        assert f"| {case['endpoint']} | {case['label']} | float32 |" in run.stdout
    for entry in report["endpoints"].values():
        assert set(entry["weights"].values()) == {"tiny"}
    new, cached = [c for c in report["cases"] if c["endpoint"] == "expression-editor"]
    # A new photo runs M and F; the same photo again finds them in the pipeline's cache.
    assert new["stages"]["source"] > cached["stages"]["source"]
    sadtalker = next(c for c in report["cases"] if c["endpoint"] == "sadtalker")
    assert sadtalker["extrapolated"]["frames_total"] == 250 and sadtalker["info"]["frames"] == 3


def test_a_spent_budget_skips_the_rest_and_still_writes_the_report(bench, tmp_path):
    out = tmp_path / "report.json"
    assert bench.main(["all", "--profile", "tiny", "--device", "cpu", "--budget-s", "1e-9", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert not report["complete"] and not report["cases"]
    assert [s["endpoint"] for s in report["skipped"]] == [s for s in bench.CASES if registry.is_built(s)]


class CountingPipeline:
    """Stands in for a pipeline: returns one grey image and counts its calls."""

    name = "expression-editor"
    params_type = registry.params_class("expression-editor")

    def __init__(self):
        self.calls = 0

    def __call__(self, params, inputs, seed, progress=None):
        self.calls += 1
        return PipelineResult(images=[np.full((8, 8, 3), 128, np.uint8)], info={"timings": {"work": 0.001}})

    def free_memory(self):
        pass


def test_a_case_stops_after_its_first_timed_run_once_the_budget_is_spent(bench):
    pipeline = CountingPipeline()
    case = bench.Case("expression-editor", "grey", {}, {})
    result, pixels = bench.run_case(pipeline, case, runs=5, warmup=1, device="cpu", dtype="float32",
                                    load_seconds=0.1, budget=bench.Budget(1e-9))
    assert pipeline.calls == 2 and result.runs == 1 and result.cut_by_budget
    assert result.stages == {"work": 0.001} and pixels.shape == (1, 8, 8, 3)


class FailingPipeline(CountingPipeline):
    detector = None

    def __call__(self, params, inputs, seed, progress=None):
        raise RuntimeError("CUDA out of memory")


def test_a_failing_case_is_recorded_and_the_run_goes_on(bench, monkeypatch):
    monkeypatch.setattr(bench, "weights_for", lambda slug, args: Path("unused"))
    monkeypatch.setattr(bench.bench_weights, "profile_files", lambda weights_dir, slug: {})
    monkeypatch.setattr(bench, "load_pipeline", lambda *args: (FailingPipeline(), 0.1))
    args = bench.parse_args(["expression-editor", "--device", "cpu", "--runs", "1", "--warmup", "0"])
    report = {"endpoints": {}, "cases": [], "skipped": [], "failed": False}
    bench.bench_endpoint("expression-editor", args, report, bench.Budget(None))
    assert report["failed"] and not report["cases"]
    assert [s["label"] for s in report["skipped"]] == [c.label for c in bench.expression_editor_cases(args)]
    assert all(s["reason"] == "failed: RuntimeError: CUDA out of memory" for s in report["skipped"])


def test_cuda_runs_float32_and_the_servers_default_once_each(bench):
    args = bench.parse_args(["all", "--device", "cuda"])
    assert args.dtypes == ["float32", "auto"] and args.sdxl == "full" and args.frames is None
    assert bench.dtypes_for("expression-editor", args) == ["float32", "float16"]  # half_precision
    assert bench.dtypes_for("sadtalker", args) == ["float32"]  # fp32 only (sadtalker.md §6)
    cpu = bench.parse_args(["all", "--device", "cpu", "--dtypes", "auto"])
    assert bench.dtypes_for("expression-editor", cpu) == ["float32"]  # CPU always computes in float32


def test_output_distance(bench):
    a = np.zeros((2, 4, 4, 3), np.uint8)
    same = bench.output_distance(a, a.copy())
    assert same["mean_abs"] == 0 and same["max_abs"] == 0 and same["psnr_db"] == float("inf")
    b = a.copy()
    b[0, 0, 0, 0] = 255
    d = bench.output_distance(a, b)
    assert d["max_abs"] == 255 and d["mean_abs"] == pytest.approx(255 / a.size)
    assert d["psnr_db"] == pytest.approx(10 * np.log10(a.size))
    assert bench.output_distance(a, a[:1]) == {"shape_mismatch": 1.0}


def test_extrapolation_scales_only_per_frame_stages(bench):
    stages = {"audio": 0.1, "source": 2.0, "coefficients": 0.2, "render": 4.0, "enhance": 8.0, "encode": 0.5}
    total = sum(stages.values()) + 0.3
    ext = bench.extrapolate(stages, total, frames_run=4, frames_total=250)
    assert ext["stages"]["source"] == 2.0
    assert ext["stages"]["render"] == pytest.approx(4.0 * 250 / 4)
    per_frame = (0.1 + 0.2 + 4.0 + 8.0 + 0.5) / 4
    assert ext["per_frame"] == pytest.approx(per_frame)
    assert ext["total"] == pytest.approx(2.0 + 0.3 + per_frame * 250)


def test_white_square_target_gives_one_face_above_the_diffusion_threshold(bench, bench_weights, tmp_path):
    from pipelines.common.scrfd import SCRFD
    from pipelines.common.tiny_insightface import write_tiny_insightface
    from pipelines.faceswap.swap import MIN_DIFFUSION_FACE, face_size
    from pipelines.weights.manifest import load_manifest

    write_tiny_insightface(tmp_path)
    detector = SCRFD(tmp_path / load_manifest()["insightface.buffalo_l.det_10g"].dest, device="cpu")
    for image in (bench.white_square_image(1024, 48), bench.white_square_image(512, 24)):
        faces = detector.detect_faces(image)
        assert len(faces) == 1
        assert face_size(faces[0]) >= MIN_DIFFUSION_FACE


def test_keep_best_face_leaves_one_sure_face(bench):
    conf = torch.softmax(torch.randn(2, 50, 2), dim=-1)
    loc, landms = torch.randn(2, 50, 4), torch.randn(2, 50, 10)
    out_loc, out_conf, out_landms = bench.keep_best_face(None, None, (loc, conf, landms))
    assert out_loc is loc and out_landms is landms
    assert ((out_conf[..., 1] > 0.97).sum(dim=1) == 1).all()
    assert torch.equal(out_conf[..., 1].argmax(dim=1), conf[..., 1].argmax(dim=1))


def test_full_profile_stitching_and_yolo_files_load_through_the_production_loaders(bench_weights, tmp_path):
    from pipelines.expression_editor.loader import load_stitching_retargeting
    from pipelines.common.yolo_loader import load_yolo_face

    stitching_path = tmp_path / "stitching_retargeting_module.pth"
    bench_weights.stitching(stitching_path)
    stitching, lip, eye = load_stitching_retargeting(stitching_path)
    state = bench_weights.module_state("liveportrait/stitching_retargeting_module.stitching")
    for key, value in stitching.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key].numpy())

    yolo_path = tmp_path / "face_yolov8n.pt"
    bench_weights.yolo_checkpoint(yolo_path)
    assert load_yolo_face(yolo_path, "cpu") is not None


def test_sdxl_configs_have_sdxl_base_parameter_counts(bench_weights):
    """Built on the meta device (no memory): the counts of stabilityai/stable-diffusion-xl-base-1.0's
    unet, vae, text_encoder and text_encoder_2 safetensors."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        modules = {
            "unet": UNet2DConditionModel(**bench_weights.SDXL_UNET),
            "vae": AutoencoderKL(**bench_weights.SDXL_VAE),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**bench_weights.SDXL_TEXT_ENCODER)),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**bench_weights.SDXL_TEXT_ENCODER_2)),
        }
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}
    assert counts == {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                      "text_encoder_2": 694_659_840}


def test_full_sdxl_writer_output_loads_through_the_inpainter(bench_weights, tmp_path, monkeypatch):
    """The writer at small configs of the same classes: the folder and LoRA load as installed ones do."""
    from pipelines.common.inpainter import SDXLInpainter

    monkeypatch.setattr(bench_weights, "SDXL_UNET", dict(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        attention_head_dim=(2, 4), cross_attention_dim=64, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 1),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80))
    monkeypatch.setattr(bench_weights, "SDXL_VAE", dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=64,
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2))
    small_text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                      projection_dim=32, vocab_size=516, max_position_embeddings=77)
    monkeypatch.setattr(bench_weights, "SDXL_TEXT_ENCODER", small_text)
    monkeypatch.setattr(bench_weights, "SDXL_TEXT_ENCODER_2", small_text)
    monkeypatch.setattr(bench_weights, "LIGHTNING_RANK", 2)
    model_dir, lora = tmp_path / "sdxl" / "base", tmp_path / "lora" / "lightning.safetensors"
    bench_weights.write_full_sdxl(model_dir, lora)
    assert (model_dir / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert not list(tmp_path.rglob("*.partial"))
    inpainter = SDXLInpainter.load(model_dir, lora)
    assert inpainter.has_lightning and inpainter.pipe.unet.config.block_out_channels == [32, 64]


def test_packed_shared_files_are_all_the_full_profile_reads(bench_weights, tmp_path, monkeypatch):
    """A GPU lease has only the repo: the packed copy must serve every full-size writer's source."""
    bench_weights.pack_shared(tmp_path / "shared")
    monkeypatch.setenv("FACEFOUNDRY_SHARED", str(tmp_path / "shared"))
    assert bench_weights.parity_dir() == tmp_path / "shared" / "parity"
    bench_weights.stitching(tmp_path / "stitching.pth")
    bench_weights.yolo_checkpoint(tmp_path / "face_yolov8n.pt")
    for manifest in ("sadtalker/sadtalker_bundle", "sadtalker/gfpgan", "sadtalker/parsenet", "sadtalker/retinaface",
                     "sadtalker/fan_awing", "sadtalker/mapping_crop", "sadtalker/mapping_full",
                     "liveportrait/appearance_feature_extractor", "liveportrait/motion_extractor",
                     "liveportrait/warping_module", "liveportrait/spade_generator"):
        assert (bench_weights.parity_dir() / f"{manifest}.manifest.json").is_file(), manifest
