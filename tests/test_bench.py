"""scripts/bench.py: a smoke run on the tiny profile, the per-frame extrapolation, and the
full-profile writers' official layouts (the small files only: the others are hundreds of MB)."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_tiny_profile_smoke_run_prints_a_stage_table(tmp_path):
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench.py"), "expression-editor", "--profile", "tiny", "--runs", "1",
         "--warmup", "0", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "# expression-editor - profile tiny, device cpu, dtype float32" in run.stdout
    report = json.loads(out.read_text())
    assert {c["label"] for c in report["cases"]} == {"edit, new photo", "edit, same photo (F/M cached)"}
    for case in report["cases"]:
        assert {"detect", "source", "warp", "decode", "paste"} <= set(case["stages"])
        assert case["total"] >= sum(case["stages"].values()) * 0.99
        assert f"{case['total'] * 1000:10.1f} ms" in run.stdout
    new, cached = report["cases"]
    # A new photo runs M and F; the same photo again finds them in the pipeline's cache.
    assert new["stages"]["source"] > cached["stages"]["source"]
    assert set(report["weights"].values()) == {"tiny"}


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
