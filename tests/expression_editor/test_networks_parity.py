"""Parity of the five LivePortrait networks with the reference fixtures (spec §6.2).

Per fixture: build the deterministic weights (rule v2) from the manifest, write them as the
official checkpoint would hold them (KwaiVGI ``.pth`` or Kijai ``.safetensors``, shared/parity
README §6), load that file through the production loader, run on the stored inputs and compare
with the README §7 tolerances.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.expression_editor import config, loader
from pipelines.expression_editor.motion_extractor import headpose_degrees
from pipelines.expression_editor.tiny import write_state_file, write_stitching_file
from tests.parity.fixtures import (PARITY, assert_close, assert_output, assert_same_weights, load_npz, missing_fixtures,
                                   params, report, timed,
                                   torch_state_dict_for)

SUBDIR = "liveportrait"
FORMATS = ("pth", "safetensors")
STITCHING_MLPS = ("stitching", "lip", "eye")

pytestmark = pytest.mark.usefixtures("seeded_no_grad")


@functools.lru_cache(maxsize=4)
def weights(path: Path, module: str) -> dict[str, torch.Tensor]:
    """Rule-v2 weights as torch tensors (cached: the SPADE power iterations take seconds)."""
    return torch_state_dict_for(path, module)


def official_file(tmp_path: Path, name: str, fmt: str) -> Path:
    """KwaiVGI keeps the file name with ``.pth``; Kijai with ``.safetensors`` (README §6)."""
    return tmp_path / f"{name}.{fmt}"


def image_input(fx: dict) -> torch.Tensor:
    return torch.from_numpy(fx["in_image_u8"].astype(np.float32) / np.float32(255))


def dequantised(fx: dict, name: str) -> torch.Tensor:
    return torch.from_numpy(fx[f"{name}_q"].astype(np.float32) * fx[f"{name}_scale"])


def report_output(name: str, got: torch.Tensor, fx: dict, key: str, seconds: float) -> None:
    """``report`` against the exact float32 values: the full output, or its ``_sub`` subset (then
    also the max error against the float16 copy of the whole)."""
    got = got.double().numpy()
    if key in fx:
        report(f"{name} {key}", got, fx[key], seconds)
    else:
        f16 = np.abs(got - fx[f"{key}_f16"]).max()
        report(f"{name} {key}_sub", got.reshape(-1)[fx[f"{key}_sub_idx"]], fx[f"{key}_sub"], seconds,
               note=f"; {f16:.3g} vs f16")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", params(SUBDIR, "appearance_feature_extractor"))
def test_appearance_feature_extractor(path, fmt, tmp_path):
    fx = load_npz(path)
    file = official_file(tmp_path, "appearance_feature_extractor", fmt)
    write_state_file(weights(path, "appearance_feature_extractor"), file)
    net = loader.load_appearance_feature_extractor(file)
    out, seconds = timed(net, image_input(fx))
    report_output("F", out, fx, "out_feature_3d", seconds)
    assert_output(out.numpy(), fx, "out_feature_3d")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", params(SUBDIR, "motion_extractor"))
def test_motion_extractor(path, fmt, tmp_path):
    fx = load_npz(path)
    file = official_file(tmp_path, "motion_extractor", fmt)
    write_state_file(weights(path, "motion_extractor"), file)
    net = loader.load_motion_extractor(file)
    out, seconds = timed(net, image_input(fx))
    for key in ("kp", "exp", "pitch", "yaw", "roll", "t", "scale"):
        report_output("M", out[key], fx, f"out_{key}", seconds)
        assert_output(out[key].numpy(), fx, f"out_{key}")
    for key in ("pitch", "yaw", "roll"):
        deg = headpose_degrees(out[key])
        report(f"M post_{key}_deg", deg.numpy(), fx[f"post_{key}_deg"], atol=1e-3)
        assert_close(deg.numpy(), fx[f"post_{key}_deg"], f"post_{key}_deg", atol=1e-3, rtol=0.0)


# The two big modules run one format each (their forwards take seconds); the other format's
# load is checked below to give the same network.
@pytest.mark.parametrize("path", params(SUBDIR, "warping_module"))
def test_warping_module(path, tmp_path):
    fx = load_npz(path)
    file = official_file(tmp_path, "warping_module", "pth")
    write_state_file(weights(path, "warping_module"), file)
    net = loader.load_warping_module(file)
    out, seconds = timed(net, dequantised(fx, "in_feature_3d"),
                         kp_driving=torch.from_numpy(fx["in_kp_driving"]),
                         kp_source=torch.from_numpy(fx["in_kp_source"]))
    for key in ("out", "deformation", "occlusion_map"):
        report_output("W", out[key], fx, f"out_{key}", seconds)
        assert_output(out[key].numpy(), fx, f"out_{key}")


@pytest.mark.parametrize("path", params(SUBDIR, "spade_generator"))
def test_spade_generator(path, tmp_path):
    fx = load_npz(path)
    file = official_file(tmp_path, "spade_generator", "safetensors")
    write_state_file(weights(path, "spade_generator"), file)
    net = loader.load_spade_generator(file)
    out, seconds = timed(net, feature=dequantised(fx, "in_feature"))
    report_output("G", out, fx, "out_image", seconds)
    assert_output(out.numpy(), fx, "out_image")


@pytest.mark.parametrize("module, load", [
    ("warping_module", loader.load_warping_module),
    ("spade_generator", loader.load_spade_generator),
])
def test_big_modules_load_the_same_from_both_formats(module, load, tmp_path):
    path = params(SUBDIR, module)[0].values[0]
    if path is None:
        missing_fixtures(f"no {module} fixtures")
    nets = []
    for fmt in FORMATS:
        file = official_file(tmp_path, module, fmt)
        write_state_file(weights(path, module), file)
        nets.append(load(file))
    assert_same_weights(*(net.state_dict() for net in nets), name=module)


def stitching_params():
    """One case per fixture of each of the three MLPs."""
    return [pytest.param(mlp, *p.values, marks=p.marks, id=f"{mlp}-{p.id}")
            for mlp in STITCHING_MLPS for p in params(SUBDIR, f"stitching_retargeting_module.{mlp}")]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mlp, path", stitching_params())
def test_stitching_retargeting(mlp, path, fmt, tmp_path):
    fx = load_npz(path)
    # The three MLPs share one file; each gets its own manifest's weights with this fixture's seed.
    states = {name: weights(path, f"stitching_retargeting_module.{name}") for name in STITCHING_MLPS}
    file = official_file(tmp_path, "stitching_retargeting_module", fmt)
    write_stitching_file(states, file)
    nets = dict(zip(STITCHING_MLPS, loader.load_stitching_retargeting(file)))
    out, seconds = timed(nets[mlp], torch.from_numpy(fx["in_feat"]))
    report_output(f"S.{mlp}", out, fx, "out_delta", seconds)
    assert_output(out.numpy(), fx, "out_delta")


@pytest.mark.parametrize("module, official", [
    ("appearance_feature_extractor", config.APPEARANCE_FEATURE_EXTRACTOR),
    ("warping_module", config.WARPING_MODULE),
    ("spade_generator", config.SPADE_GENERATOR),
    ("stitching_retargeting_module.stitching", config.STITCHING_RETARGETING_MODULE["stitching"]),
    ("stitching_retargeting_module.lip", config.STITCHING_RETARGETING_MODULE["lip"]),
    ("stitching_retargeting_module.eye", config.STITCHING_RETARGETING_MODULE["eye"]),
])
def test_official_config_is_the_fixture_config(module, official):
    # The motion extractor's config names its backbone instead; its strict load above checks it.
    file = PARITY / SUBDIR / f"{module}.config.json"
    if not file.exists():
        missing_fixtures(f"no {file}")
    kwargs = json.loads(file.read_text())["kwargs"]
    assert {k: official[k] for k in kwargs} == kwargs


def test_headpose_degrees_of_uniform_and_peaked_logits():
    # Uniform bins average to bin 32.5 → 0°; a one-hot bin i gives 3·i − 97.5.
    assert headpose_degrees(torch.zeros(1, 66)).item() == pytest.approx(0.0, abs=1e-4)
    peaked = torch.full((1, 66), -1e4)
    peaked[0, 40] = 0.0
    assert headpose_degrees(peaked).item() == pytest.approx(22.5, abs=1e-4)
