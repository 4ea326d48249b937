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

from pipelines.sadtalker.animate import keypoint_transformation, make_animation, source_keypoints
from pipelines.sadtalker.coeff_loader import load_mapping_net
from pipelines.sadtalker.facerender_batch import facerender_inputs
from pipelines.sadtalker.render_loader import load_generator, load_kp_detector
from tests.parity.fixtures import assert_close, load_npz, params, report, seed_of, timed, torch_state_dict_for
from tests.parity.sadtalker_bundle import write_sadtalker_bundle

pytestmark = pytest.mark.usefixtures("seeded_no_grad")

@lru_cache(maxsize=4)
def fixture_state(manifest_dir: Path, seed: int, module: str) -> dict[str, torch.Tensor]:
    """detweights for (module, seed) as tensors; cached because the generator takes seconds to build
    and both the generator and the e2e fixtures of a seed use the same manifest."""
    return torch_state_dict_for(manifest_dir / f"{module}.seed{seed}.npz", module)


def write_bundle(path: Path, fixture: Path, modules: list[str]) -> Path:
    """``SadTalker_V0.0.2_256.safetensors`` with the fixture's weights of ``modules``."""
    return write_sadtalker_bundle(path, fixture, modules,
                                  state_of=lambda f, module: fixture_state(f.parent, seed_of(f), module))


@pytest.mark.parametrize("fixture", params("sadtalker", "kp_detector"))
def test_kp_detector(fixture, tmp_path):
    data = load_npz(fixture)
    path = write_bundle(tmp_path / "SadTalker_V0.0.2_256.safetensors", fixture, ["kp_detector"])
    net = load_kp_detector(path)
    kp, seconds = timed(net, torch.from_numpy(data["x"]))
    report("kp_detector.kp_value", kp.numpy(), data["kp_value"], seconds)
    assert_close(kp.numpy(), data["kp_value"], "kp_value")


@pytest.mark.parametrize("fixture", params("sadtalker", "generator"))
def test_generator(fixture, tmp_path):
    data = load_npz(fixture)
    path = write_bundle(tmp_path / "SadTalker_V0.0.2_256.safetensors", fixture, ["generator"])
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
                          ["kp_detector", "generator"])
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
    """``get_facerender_data(batch_size=2, expression_scale=1.4)``: the windows the renderer is fed,
    in frame order, against upstream's batch-major layout read back into frame order (row b holds
    frames b*L .. b*L+L-1, the tail padded with the last window), and the source tensors repeated
    over upstream's batch."""
    data = load_npz(fixture)
    inputs = facerender_inputs(data["first_coeff"], data["generated_coeff"], data["pic_rgb_u8"], 1.4,
                               full_frame, still)
    frame_num = int(data[f"{mode}/frame_num"])
    assert inputs.frame_num == frame_num
    upstream = data[f"{mode}/target_semantics_list"]
    assert upstream.shape[0] == 2 and upstream.shape[1] * 2 >= frame_num
    in_frame_order = upstream.reshape(-1, *upstream.shape[2:])
    assert_close(inputs.target_semantics.numpy(), in_frame_order[:frame_num], "target_semantics")
    assert (in_frame_order[frame_num:] == in_frame_order[frame_num - 1]).all(), "upstream pads with the last window"
    assert_close(inputs.source_semantics.repeat(2, 1, 1).numpy(), data[f"{mode}/source_semantics"], "source_semantics")
    assert_close(inputs.source_image.repeat(2, 1, 1, 1).numpy(), data["source_image"], "source_image")
