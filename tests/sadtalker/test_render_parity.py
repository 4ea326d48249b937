"""Parity of the face renderer (KPDetector, HEEstimator, generator, make_animation glue, render
batch) with the reference fixtures (spec §8.4, parity README §5.3, §7).

Weights come from the fixture manifests (detweights rule v2), are written as the official files
hold them (bundle safetensors under ``kp_extractor.`` / ``generator.`` beside a foreign key; the
facevid2vid pickle's ``he_estimator`` entry; the mapping pickle's ``mapping`` entry) and loaded
through the production loaders. Run with ``-s`` to see CPU times and max errors.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines.sadtalker.animate import keypoint_transformation, make_animation, source_keypoints
from pipelines.sadtalker.coeff_loader import load_mapping_net
from pipelines.sadtalker.facerender_batch import facerender_inputs, upstream_batch_layout
from pipelines.sadtalker.render_config import GENERATOR_PREFIX, KP_DETECTOR_PREFIX
from pipelines.sadtalker.render_loader import load_generator, load_he_estimator, load_kp_detector
from tests.parity.fixtures import assert_close, load_npz, params, report, seed_of, timed, torch_state_dict_for

pytestmark = pytest.mark.usefixtures("seeded_no_grad")

# A key of another network in the real bundle: the loaders must select by prefix and ignore it.
FOREIGN_KEY = "audio2exp.mapping1.bias"


@lru_cache(maxsize=4)
def fixture_state(manifest_dir: Path, seed: int, module: str) -> dict[str, torch.Tensor]:
    """detweights for (module, seed) as tensors; cached because the generator takes seconds to build
    and both the generator and the e2e fixtures of a seed use the same manifest."""
    return torch_state_dict_for(manifest_dir / f"{module}.seed{seed}.npz", module)


def write_bundle(path: Path, fixture: Path, modules: dict[str, str]) -> Path:
    """``SadTalker_V0.0.2_256.safetensors`` with the fixture's weights of ``modules`` ({name: prefix})."""
    state = {FOREIGN_KEY: torch.zeros(64)}
    for module, prefix in modules.items():
        state.update({prefix + k: v for k, v in fixture_state(fixture.parent, seed_of(fixture), module).items()})
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("fixture", params("sadtalker", "kp_detector"))
def test_kp_detector(fixture, tmp_path):
    data = load_npz(fixture)
    path = write_bundle(tmp_path / "SadTalker_V0.0.2_256.safetensors", fixture, {"kp_detector": KP_DETECTOR_PREFIX})
    net = load_kp_detector(path)
    kp, seconds = timed(net, torch.from_numpy(data["x"]))
    report("kp_detector.kp_value", kp.numpy(), data["kp_value"], seconds)
    assert_close(kp.numpy(), data["kp_value"], "kp_value")


@pytest.mark.parametrize("fixture", params("sadtalker", "he_estimator"))
def test_he_estimator(fixture, tmp_path):
    data = load_npz(fixture)
    path = tmp_path / "facevid2vid_00189-model.pth.tar"
    torch.save({"he_estimator": fixture_state(fixture.parent, seed_of(fixture), "he_estimator"),
                "epoch": 189}, path)
    net = load_he_estimator(path)
    out, seconds = timed(net, torch.from_numpy(data["x"]))
    report("he_estimator.yaw", out["yaw"].numpy(), data["yaw"], seconds)
    for key in ("yaw", "pitch", "roll", "t", "exp"):
        assert_close(out[key].numpy(), data[key], key)


@pytest.mark.parametrize("fixture", params("sadtalker", "generator"))
def test_generator(fixture, tmp_path):
    data = load_npz(fixture)
    path = write_bundle(tmp_path / "SadTalker_V0.0.2_256.safetensors", fixture, {"generator": GENERATOR_PREFIX})
    net = load_generator(path)
    out, seconds = timed(net, torch.from_numpy(data["source_image"]), kp_driving=torch.from_numpy(data["kp_driving"]),
                         kp_source=torch.from_numpy(data["kp_source"]))
    for key in ("prediction", "occlusion_map", "deformation"):
        report(f"generator.{key}", out[key].numpy(), data[key], seconds)
        assert_close(out[key].numpy(), data[key], key)


@pytest.mark.parametrize("fixture", params("sadtalker", "facerender_e2e"))
def test_facerender_e2e(fixture, tmp_path):
    """KPDetector + MappingNet (70-d) + keypoint transformation + generator over 2 frames, rendered
    as ONE batch of 2 (the GPU path) against upstream's frame-by-frame loop."""
    data = load_npz(fixture)
    seed = seed_of(fixture)
    bundle = write_bundle(tmp_path / "SadTalker_V0.0.2_256.safetensors", fixture,
                          {"kp_detector": KP_DETECTOR_PREFIX, "generator": GENERATOR_PREFIX})
    mapping_path = tmp_path / "mapping_00229-model.pth.tar"
    torch.save({"mapping": fixture_state(fixture.parent, seed, "mapping_crop")}, mapping_path)
    kp_detector, generator = load_kp_detector(bundle), load_generator(bundle)
    mapping = load_mapping_net(mapping_path, full_frame=False)

    source_image = torch.from_numpy(data["source_image"])
    source_semantics = torch.from_numpy(data["source_semantics"])
    targets = torch.from_numpy(data["target_semantics"][0])
    kp_canonical, kp_source = source_keypoints(source_image, source_semantics, kp_detector, mapping)
    kp_driving = keypoint_transformation(kp_canonical, mapping(targets))
    assert_close(kp_canonical.numpy(), data["kp_canonical"], "kp_canonical")
    assert_close(kp_source.numpy(), data["kp_source"], "kp_source")
    assert_close(kp_driving[None].numpy(), data["kp_driving"], "kp_driving")

    frames, seconds = timed(lambda: torch.cat(list(make_animation(
        source_image, source_semantics, targets, kp_detector, mapping, generator, frames_per_batch=2))))
    report("facerender_e2e.predictions", frames[None].numpy(), data["predictions"], seconds)
    assert_close(frames[None].numpy(), data["predictions"], "predictions")


@pytest.mark.parametrize("fixture", params("sadtalker", "facerender_batch"))
@pytest.mark.parametrize(("mode", "full_frame", "still"), [
    ("full", True, False), ("crop", False, False), ("full_still", True, True)])
def test_facerender_batch(fixture, mode, full_frame, still):
    """``get_facerender_data(batch_size=2, expression_scale=1.4)``: our frame-order windows, padded
    and laid out as upstream, and the source tensors repeated over upstream's batch."""
    data = load_npz(fixture)
    inputs = facerender_inputs(data["first_coeff"], data["generated_coeff"], data["pic_rgb_u8"], 1.4,
                               full_frame, still)
    assert inputs.frame_num == int(data[f"{mode}/frame_num"])
    np.testing.assert_array_equal(upstream_batch_layout(inputs.target_semantics.numpy(), 2),
                                  data[f"{mode}/target_semantics_list"])
    np.testing.assert_array_equal(inputs.source_semantics.repeat(2, 1, 1).numpy(), data[f"{mode}/source_semantics"])
    assert_close(inputs.source_image.repeat(2, 1, 1, 1).numpy(), data["source_image"], "source_image")
