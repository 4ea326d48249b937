"""Parity of the shared SDXL conditioning pieces with shared/parity/sdxl_conditioning (README §3, §4).

The two Resamplers are loaded through the production path: ``ip-adapter.bin`` (nested dict) and
``ip-adapter-plus-face_sdxl_vit-h.safetensors`` (flat, prefixed) written with the fixture weights
and read by diffusers' ``load_ip_adapter`` via ``pipelines.common.instantid.load_face_adapters``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.common.comfy_prompt import parse_prompt
from pipelines.common.ip_adapter_noise import noised_negative_image
from pipelines.common.kps_image import draw_kps
from pipelines.common.sigma_gate import (
    SigmaGate,
    active_steps,
    discrete_sigmas,
    karras_sigmas,
    percent_to_sigma,
)
from tests.parity.fixtures import assert_close, assert_output, load_npz, params, report, timed

SUBDIR = "sdxl_conditioning"


def _params(module: str):
    # Test ids carry the fixture folder name (sdxl_conditioning) and the file name.
    return params(SUBDIR, module)


@pytest.mark.parametrize("path", _params("draw_kps"))
def test_parity_sdxl_conditioning_draw_kps(path: Path):
    fx = load_npz(path)
    cases = [str(c) for c in fx["cases"]]
    assert cases
    for case in cases:
        width, height = (int(v) for v in fx[f"{case}/in_size_wh"])
        got = draw_kps(fx[f"{case}/in_kps"], width, height)
        ref = fx[f"{case}/out_image_u8"]
        assert got.shape == ref.shape, case
        differing = int((got != ref).any(-1).sum())
        assert differing == 0, f"{case}: {differing} pixels differ"


@pytest.mark.parametrize("path", _params("sigma_gating"))
def test_parity_sdxl_conditioning_sigma_gating(path: Path):
    fx = load_npz(path)
    assert_close(discrete_sigmas().numpy(), fx["discrete_sigmas"], "discrete_sigmas", atol=0, rtol=2e-6)
    got = np.array([percent_to_sigma(float(p)) for p in fx["percent_grid"]])
    assert_close(got, fx["percent_to_sigma"], "percent_to_sigma", atol=0, rtol=2e-6)
    gates = [SigmaGate(float(s), float(e)) for s, e in fx["gate_pairs"]]
    assert_close(np.array([g.sigma_range() for g in gates]), fx["gate_sigma_range"], "gate_sigma_range",
                 atol=0, rtol=2e-6)
    for steps in fx["steps"]:
        sigmas = karras_sigmas(int(steps))
        assert_close(sigmas.numpy(), fx[f"karras_steps{steps}"], f"karras_steps{steps}", atol=0, rtol=2e-6)
        mask = np.stack([active_steps(sigmas[:-1], g) for g in gates])
        assert (mask == fx[f"active_steps{steps}"]).all(), f"active_steps{steps}"
        assert (mask.sum(1) == fx[f"n_active_steps{steps}"]).all()
    for i, (steps, denoise) in enumerate(fx["denoise_cases"]):
        got = karras_sigmas(int(steps), float(denoise)).numpy()
        assert_close(got, fx[f"karras_denoise_case{i}"], f"karras_denoise_case{i}", atol=0, rtol=2e-6)


@pytest.mark.parametrize("path", _params("sigma_gating"))
def test_parity_sdxl_conditioning_sigma_gating_on_diffusers_schedule(path: Path):
    """The σ the production loop gates on (diffusers' DPM++ 2M SDE Karras) opens the same steps."""
    from pipelines.common.instantid import dpmpp_2m_sde_karras

    fx = load_npz(path)
    gates = [SigmaGate(float(s), float(e)) for s, e in fx["gate_pairs"]]
    for steps in fx["steps"]:
        scheduler = dpmpp_2m_sde_karras()
        scheduler.set_timesteps(int(steps))
        sigmas = scheduler.sigmas[:-1].numpy()
        # diffusers builds its betas in float32: measured ≤ 1.23e-5 relative from ComfyUI's σ at every
        # step count here, while the nearest gate threshold lies 0.36 % away (README §4).
        assert_close(sigmas, fx[f"karras_steps{steps}"][:-1], f"diffusers karras {steps}", atol=0, rtol=2e-5)
        mask = np.stack([active_steps(sigmas, g) for g in gates])
        assert (mask == fx[f"active_steps{steps}"]).all(), f"active_steps{steps}"


@pytest.mark.parametrize("path", _params("comfy_prompt_weights"))
def test_parity_sdxl_conditioning_comfy_prompt_weights(path: Path):
    fx = load_npz(path)
    index, text, weight = [], [], []
    for i, prompt in enumerate(fx["in_prompts"]):
        for seg, w in parse_prompt(str(prompt)):
            index.append(i)
            text.append(seg)
            weight.append(w)
    assert index == fx["out_seg_prompt_index"].tolist()
    assert text == [str(t) for t in fx["out_seg_text"]]
    assert_close(np.array(weight), fx["out_seg_weight"], "out_seg_weight", atol=0, rtol=1e-12)


@pytest.mark.parametrize("path", _params("ipadapter_noise_negative"))
def test_parity_sdxl_conditioning_ipadapter_noise_negative(path: Path):
    fx = load_npz(path)
    image = torch.from_numpy(fx["in_image_u8"].astype(np.float32) / 255.0)[None]
    for noise in fx["noise_levels"]:
        key = f"out_neg_image_n{int(round(noise * 100)):03d}"
        got, seconds = timed(noised_negative_image, image, float(noise))
        report(key, got.numpy(), fx[key], seconds)
        assert_output(got.numpy(), fx, key)


RESAMPLERS = {
    "instantid_resampler": ("in_face_emb", 0),
    "ipadapter_plusface_resampler": ("in_hidden_states", 1),
}


def _tiny_unet(cross_attention_dim: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), cross_attention_dim=cross_attention_dim, norm_num_groups=8,
    )


def _fixture_input(fx: dict, name: str) -> torch.Tensor:
    if name == "in_hidden_states":
        return torch.from_numpy(fx["in_hidden_states_q"].astype(np.float32) * fx["in_hidden_states_scale"])
    return torch.from_numpy(fx[name])


@pytest.mark.parametrize("path", _params("instantid_resampler") + _params("ipadapter_plusface_resampler"))
def test_parity_sdxl_conditioning_resampler_through_load_ip_adapter(path: Path, tmp_path: Path):
    """Both files in their official layouts, loaded together by ``load_face_adapters``; the fixture's
    Resampler sits in its slot (InstantID first, plus-face second), the other slot holds tiny weights."""
    from diffusers import StableDiffusionXLPipeline

    from pipelines.common.instantid import load_face_adapters
    from pipelines.common.tiny_sdxl import (
        ip_adapter_attention_state,
        resampler_state,
        write_instantid_bin,
        write_plus_face_safetensors,
    )
    from tests.parity.fixtures import torch_state_dict_for

    module = path.name.split(".seed")[0]
    input_name, slot = RESAMPLERS[module]
    fx = load_npz(path)
    weights = torch_state_dict_for(path, module)
    output_dim = weights["proj_out.weight"].shape[0]
    unet = _tiny_unet(output_dim)
    pipe = StableDiffusionXLPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=unet, scheduler=None)
    attention = ip_adapter_attention_state(unet)
    projections = [resampler_state(64, 1, 16, 512, output_dim), resampler_state(64, 1, 16, 1280, output_dim)]
    projections[slot] = weights
    bin_path = tmp_path / "instantid" / "ip-adapter.bin"
    plus_path = tmp_path / "sdxl_models" / "ip-adapter-plus-face_sdxl_vit-h.safetensors"
    write_instantid_bin(bin_path, projections[0], attention)
    # Fixture weights stay float32 (README §3.2); the official file's float16 is outside the tolerance.
    write_plus_face_safetensors(plus_path, projections[1], attention, dtype=torch.float32)
    load_face_adapters(pipe, bin_path, plus_path)

    projection = unet.encoder_hid_proj.image_projection_layers[slot]
    with torch.no_grad():
        got, seconds = timed(projection, _fixture_input(fx, input_name))
    report(f"{module} out_tokens", got.numpy(), fx["out_tokens"], seconds)
    assert_output(got.numpy(), fx, "out_tokens")
