"""Tiny LivePortrait checkpoints: official layouts, strict loading, and the F→M→W→G chain on CPU."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipelines.expression_editor import loader
from pipelines.expression_editor.motion_extractor import headpose_degrees
from pipelines.expression_editor.tiny import PTH_PATHS, SAFETENSORS_PATHS, write_tiny, write_tiny_liveportrait
from pipelines.weights.manifest import load_manifest
from tests.parity.fixtures import PARITY, assert_same_weights, missing_fixtures

FORMATS = ("pth", "safetensors")
MANIFESTS = PARITY / "liveportrait"
STITCHING_MLPS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module", params=FORMATS)
def tiny(request, tmp_path_factory):
    fmt = request.param
    return fmt, write_tiny_liveportrait(tmp_path_factory.mktemp(f"tiny_{fmt}"), fmt)


def run_chain(nets: loader.LivePortraitNetworks, dtype=torch.float32):
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)).to(dtype)
    f_s = nets.appearance(image)
    motion = nets.motion(image)
    x_s = motion["kp"].view(1, 21, 3)
    x_d = x_s + 0.02 * torch.randn(1, 21, 3, generator=torch.Generator().manual_seed(1)).to(dtype)
    delta = nets.stitching(torch.cat([x_s.flatten(1), x_d.flatten(1)], dim=1))
    warped = nets.warping(f_s, kp_driving=x_d + delta[:, :63].view(1, 21, 3), kp_source=x_s)
    return f_s, motion, warped, nets.spade(feature=warped["out"])


def test_tiny_files_are_small_and_in_the_official_places(tiny):
    fmt, files = tiny
    layout = PTH_PATHS if fmt == "pth" else SAFETENSORS_PATHS
    for name, path in files.items():
        assert str(path).endswith(layout[name])
        assert path.stat().st_size < 2_000_000, f"{name}: {path.stat().st_size} B"
        assert json.loads((path.parent / (path.name + ".config.json")).read_text())


def test_tiny_chain_runs_on_cpu(tiny):
    _, files = tiny
    nets = loader.load_liveportrait(files)
    f_s, motion, warped, image = run_chain(nets)
    assert f_s.shape[0] == 1 and f_s.shape[-2:] == (64, 64)
    assert motion["kp"].shape == motion["exp"].shape == (1, 63)
    assert motion["pitch"].shape == motion["yaw"].shape == motion["roll"].shape == (1, 66)
    assert motion["t"].shape == (1, 3) and motion["scale"].shape == (1, 1)
    assert headpose_degrees(motion["yaw"]).shape == (1, 1)
    assert warped["deformation"].shape[-1] == 3 and warped["occlusion_map"].shape == (1, 1, 64, 64)
    assert image.shape == (1, 3, 512, 512)
    assert torch.isfinite(image).all() and image.min() > 0 and image.max() < 1
    assert nets.lip(torch.zeros(1, 65)).shape == nets.eye(torch.zeros(1, 66)).shape == (1, 63)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_tiny_chain_runs_cast_to_half_precision(tmp_path, dtype):
    files = write_tiny_liveportrait(tmp_path)
    *_, image = run_chain(loader.load_liveportrait(files, dtype=dtype), dtype)
    assert image.dtype == dtype and image.shape == (1, 3, 512, 512)
    assert torch.isfinite(image.float()).all()


def test_both_layouts_hold_the_same_networks(tmp_path):
    a = loader.load_liveportrait(write_tiny_liveportrait(tmp_path / "a", "pth", seed=3))
    b = loader.load_liveportrait(write_tiny_liveportrait(tmp_path / "b", "safetensors", seed=3))
    for field in ("appearance", "motion", "warping", "spade", "stitching", "lip", "eye"):
        assert_same_weights(getattr(a, field).state_dict(), getattr(b, field).state_dict(), field)


def official_keys(module: str) -> set[str]:
    manifest = MANIFESTS / f"{module}.manifest.json"
    if not manifest.exists():
        missing_fixtures(f"no {manifest}")
    return set(json.loads(manifest.read_text()))


@pytest.mark.parametrize("name", ["appearance_feature_extractor", "motion_extractor",
                                  "warping_module", "spade_generator"])
def test_tiny_key_layout_is_the_official_one(tiny, name):
    fmt, files = tiny
    raw = load_file(str(files[name])) if fmt == "safetensors" else torch.load(files[name], weights_only=True)
    assert set(raw) == official_keys(name)


def test_tiny_stitching_nesting_is_the_official_one(tiny):
    fmt, files = tiny
    path = files["stitching_retargeting_module"]
    if fmt == "pth":
        raw = torch.load(path, weights_only=True)
        assert set(raw) == set(STITCHING_MLPS.values())
        for mlp, entry in STITCHING_MLPS.items():
            keys = official_keys(f"stitching_retargeting_module.{mlp}")
            assert set(raw[entry]) == {f"module.{k}" for k in keys}
    else:
        expected = set()
        for mlp, entry in STITCHING_MLPS.items():
            expected |= {f"{entry}_module.{k}" for k in official_keys(f"stitching_retargeting_module.{mlp}")}
        assert set(load_file(str(path))) == expected


def test_loading_is_strict(tmp_path):
    files = write_tiny_liveportrait(tmp_path, "safetensors")
    path = files["appearance_feature_extractor"]
    state = load_file(str(path))
    save_file({**state, "extra.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="unexpected"):
        loader.load_appearance_feature_extractor(path)
    state.pop("second.bias")
    save_file(state, str(path))
    with pytest.raises(ValueError, match="missing"):
        loader.load_appearance_feature_extractor(path)


def test_stitching_keys_outside_the_three_prefixes_are_refused(tmp_path):
    files = write_tiny_liveportrait(tmp_path, "safetensors")
    path = files["stitching_retargeting_module"]
    save_file({**load_file(str(path)), "stray.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="stray.weight"):
        loader.load_stitching_retargeting(path)


def test_stitching_pth_without_the_ddp_prefix_is_refused(tmp_path):
    files = write_tiny_liveportrait(tmp_path, "pth")
    path = files["stitching_retargeting_module"]
    raw = torch.load(path, weights_only=True)
    raw["retarget_mouth"] = {k.removeprefix("module."): v for k, v in raw["retarget_mouth"].items()}
    torch.save(raw, path)
    with pytest.raises(ValueError, match="module."):
        loader.load_stitching_retargeting(path)


def test_tiny_profile_hook_writes_every_required_manifest_file(tmp_path):
    write_tiny(tmp_path)
    required = [e.dest for e in load_manifest().for_pipeline("expression-editor") if e.required]
    assert required and all((tmp_path / dest).is_file() for dest in required)
    loader.load_liveportrait({name: tmp_path / rel for name, rel in PTH_PATHS.items()})
