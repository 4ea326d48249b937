"""Unit tests of the faceswap-v4 building blocks: masks, style, head geometry, the inpainter modes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.common.alignment import estimate_similarity
from pipelines.common.color_transfer import SKIN_CLASSES
from pipelines.common.face_types import Face, largest_face
from pipelines.common.inpainter import MODES, working_size
from pipelines.common.parsenet import ParseNet
from pipelines.common.tiny_restore import TINY_PARSENET
from pipelines.faceswap import masks, style, swap


def lab(img_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)


def square_face(x1: float, y1: float, side: float) -> Face:
    kps = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]], np.float32)
    return Face(bbox=np.array([x1, y1, x1 + side, y1 + side], np.float32),
                kps=kps * side + np.array([x1, y1], np.float32), det_score=1.0)


# -- masks -------------------------------------------------------------------------------------


def test_class_sets_follow_the_spec():
    inner, core, head = set(masks.INNER_FACE), set(masks.INNER_CORE), set(masks.HEAD)
    # §6.3 step 5: skin, brows, eyes, nose, mouth, lips.
    assert inner == {1, 2, 3, 4, 5, 10, 11, 12, 13}
    # The core is the inner face without skin: the inpainter may touch the skin edge, never this.
    assert core == inner - {1}
    # §6.4 step 5: the head adds glasses, ears, earring, hair and hat; neck 14 is handled apart.
    assert head == inner | {6, 7, 8, 9, 17, 18}
    assert 14 not in head and not head & {0, 15, 16}
    assert set(SKIN_CLASSES) <= inner


def test_class_mask_marks_exactly_the_classes():
    parsing = np.arange(19, dtype=np.uint8).repeat(3).reshape(19, 3)
    mask = masks.class_mask(parsing, masks.INNER_CORE)
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
    assert [int(c) for c in np.unique(parsing[mask == 1])] == list(masks.INNER_CORE)


def test_dilate_grows_by_the_given_radius():
    mask = np.zeros((41, 41), np.float32)
    mask[20, 20] = 1
    grown = masks.dilate(mask, 5)
    rows = np.where(grown[:, 20] > 0)[0]
    assert (rows.min(), rows.max()) == (15, 25)
    assert np.array_equal(masks.dilate(mask, 0), mask)


def test_band_below_is_the_rows_under_each_columns_lowest_pixel():
    mask = np.zeros((40, 12), np.float32)
    mask[5:20, 2:6] = 1  # bottom row 19
    mask[8:12, 8:10] = 1  # bottom row 11
    mask[30:34, 8:10] = 0.4  # soft values below one half are not mask
    band = masks.band_below(mask, 6)
    assert set(np.unique(band)) <= {0.0, 1.0}
    for col in range(12):
        rows = np.where(band[:, col] > 0)[0]
        if 2 <= col < 6:
            assert list(rows) == list(range(19, 25))
        elif 8 <= col < 10:
            assert list(rows) == list(range(11, 17))
        else:
            assert rows.size == 0


def test_band_below_stops_at_the_image_edge():
    mask = np.zeros((10, 4), np.float32)
    mask[2:8, 1] = 1
    assert list(np.where(masks.band_below(mask, 5)[:, 1])[0]) == [7, 8, 9]


def ellipse(hw, centre, axes) -> np.ndarray:
    mask = np.zeros(hw, np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return mask.astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(
    head=st.tuples(st.integers(20, 44), st.integers(20, 44), st.integers(6, 20), st.integers(6, 24)),
    source=st.tuples(st.integers(20, 44), st.integers(20, 44), st.integers(6, 20), st.integers(6, 24)),
    core=st.tuples(st.integers(24, 40), st.integers(24, 40), st.integers(2, 10), st.integers(2, 10)),
    side=st.integers(10, 60),
)
def test_head_inpaint_mask_never_covers_the_inner_core(head, source, core, side):
    hw = (64, 64)
    target_head = ellipse(hw, head[:2], head[2:])
    source_head = ellipse(hw, source[:2], source[2:])
    inner_core = ellipse(hw, core[:2], core[2:])
    mi = swap.head_inpaint_mask(target_head, source_head, inner_core, square_face(10, 10, side))
    assert mi.min() >= 0 and mi.max() <= 1
    assert not np.any((mi > 0) & (inner_core > 0))
    # What it regenerates: the union of both heads away from the core (§6.4 step 8).
    grow = max(2, int(0.04 * side))
    away = np.maximum(target_head, source_head) * (1 - masks.dilate(inner_core, grow))
    assert np.all(mi[away > 0] == 1)


def test_head_inpaint_mask_includes_the_neck_seam_band():
    hw = (120, 80)
    head = ellipse(hw, (40, 50), (20, 30))
    core = ellipse(hw, (40, 45), (8, 10))
    face = square_face(20, 20, 60)
    mi = swap.head_inpaint_mask(head, head, core, face)
    lowest = np.where(head[:, 40] > 0)[0].max()
    band_height = int(0.12 * 60)
    assert np.all(mi[lowest:lowest + band_height, 40] == 1)
    assert mi[lowest + band_height:, 40].max() == 0


def test_largest_face_is_chosen_by_box_area():
    small, big, mid = square_face(0, 0, 20), square_face(50, 50, 60), square_face(100, 0, 40)
    assert largest_face([small, big, mid]) is big
    assert largest_face([]) is None


# -- style -------------------------------------------------------------------------------------


def two_tone(hw=(96, 96), inside=(170, 120, 90), outside=(120, 100, 80), noise=6.0, seed=0):
    """An image whose central disc (the swapped region) differs in colour from its surround."""
    rng = np.random.default_rng(seed)
    region = ellipse(hw, (hw[1] // 2, hw[0] // 2), (hw[1] // 4, hw[0] // 4))
    base = np.where(region[..., None] > 0, np.float32(inside), np.float32(outside))
    img = np.clip(base + rng.normal(0, noise, hw + (3,)), 0, 255).astype(np.uint8)
    return img, region


def test_normal_changes_only_luminance_inside_the_region():
    img, region = two_tone(inside=(200, 150, 120), outside=(180, 130, 100))
    out = style.apply_style(img, region, img, region, "normal", 48.0, np.random.default_rng(0))
    assert np.array_equal(out[region == 0], img[region == 0])
    before, after = lab(img)[region > 0], lab(out)[region > 0]
    # One gain on L; a and b only move by 8-bit LAB/RGB rounding.
    assert np.abs(after[:, 1:] - before[:, 1:]).mean() < 1.0
    gain = after[:, 0].mean() / before[:, 0].mean()
    assert gain < 0.98
    assert np.abs(after[:, 0] - gain * before[:, 0]).mean() < 1.5


def test_normal_gain_matches_the_ring_outside_the_edge():
    img, region = two_tone(inside=(200, 150, 120), outside=(180, 130, 100), noise=0.0)
    out = style.seam_luminance_gain(img, region)
    outside, inside = style.ring(region, 10)
    assert abs(lab(out)[..., 0][inside].mean() - lab(out)[..., 0][outside].mean()) < 2.0


def test_normal_gain_is_bounded():
    # A bright face on a black surround: the ring would ask for a gain near 0.
    img, region = two_tone(inside=(220, 200, 190), outside=(0, 0, 0), noise=0.0)
    out = style.seam_luminance_gain(img, region)
    gain = lab(out)[region > 0][:, 0].mean() / lab(img)[region > 0][:, 0].mean()
    assert gain == pytest.approx(1 / style.MAX_SEAM_GAIN, abs=0.02)


def lab_stats(img, mask):
    pixels = lab(img)[mask > 0]
    return pixels.mean(axis=0), pixels.std(axis=0)


def test_style_moves_the_region_statistics_to_the_targets_skin():
    result, region = two_tone(inside=(90, 140, 200), outside=(120, 100, 80), noise=4.0, seed=1)
    target, skin = two_tone(inside=(210, 150, 110), outside=(120, 100, 80), noise=12.0, seed=2)
    out = style.apply_style(result, region, target, skin, "style", 48.0, np.random.default_rng(0))
    target_mean, target_std = lab_stats(target, skin)
    before_mean, _ = lab_stats(result, region)
    after_mean, after_std = lab_stats(out, region)
    assert np.linalg.norm(after_mean - target_mean) < 0.25 * np.linalg.norm(before_mean - target_mean)
    assert np.all(np.abs(after_std[1:] - target_std[1:]) < 0.5 * target_std[1:] + 1.0)
    assert np.array_equal(out[region == 0], result[region == 0])
    normal = style.apply_style(result, region, target, skin, "normal", 48.0, np.random.default_rng(0))
    normal_ab = lab_stats(normal, region)[0][1:]
    assert np.linalg.norm(normal_ab - before_mean[1:]) < 2.0


def test_style_statistics_come_from_the_skin_not_the_whole_region():
    # Dark hair inside the region must not bias the colour mapping measured on skin (§4.4): with
    # region-wide statistics the skin's chroma lands several units off and its texture flattens.
    result, region = two_tone(inside=(90, 140, 200), outside=(120, 100, 80), noise=6.0, seed=3)
    skin = region.copy()
    skin[:, : result.shape[1] // 2] = 0
    result[(region > 0) & (skin == 0)] = (60, 40, 20)
    target = two_tone(inside=(210, 150, 110), noise=12.0, seed=4)[0]
    out = style.apply_style(result, region, target, skin, "style", 48.0, np.random.default_rng(0))
    (mean, std), (target_mean, target_std) = lab_stats(out, skin), lab_stats(target, skin)
    # a and b only: L also carries the low-frequency lighting transfer.
    np.testing.assert_allclose(mean[1:], target_mean[1:], atol=2.0)
    np.testing.assert_allclose(std[1:], target_std[1:], rtol=0.3)


def test_style_turns_a_grayscale_target_gray():
    result, region = two_tone(inside=(90, 140, 200), noise=4.0)
    target = np.repeat(two_tone(inside=(180, 180, 180), outside=(90, 90, 90))[0][..., :1], 3, axis=2)
    out = style.apply_style(result, region, target, region, "style", 48.0, np.random.default_rng(0))
    inside = out[region > 0].astype(np.int16)
    assert np.abs(inside - inside.mean(axis=1, keepdims=True)).max() <= 1


def test_match_sharpness_moves_laplacian_variance_toward_the_target():
    rng = np.random.default_rng(0)
    sharp = np.clip(128 + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
    smooth = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    mask = np.ones((64, 64), np.float32)
    v_sharp, v_smooth = style.laplacian_variance(sharp, mask), style.laplacian_variance(smooth, mask)
    blurred = style.match_sharpness(sharp, mask, v_smooth)
    assert v_smooth <= style.laplacian_variance(blurred, mask) < 0.5 * v_sharp
    crisper = style.match_sharpness(smooth, mask, v_sharp)
    assert style.laplacian_variance(crisper, mask) > 2 * v_smooth
    assert style.match_sharpness(sharp, mask, v_sharp * 1.1) is sharp


def test_add_grain_reaches_the_target_noise_level_reproducibly():
    flat = np.full((64, 64, 3), 128, np.uint8)
    mask = np.ones((64, 64), np.float32)
    grained = style.add_grain(flat, mask, 6.0, np.random.default_rng(5))
    assert style.noise_level(grained, mask) == pytest.approx(6.0, rel=0.3)
    assert np.array_equal(grained, style.add_grain(flat, mask, 6.0, np.random.default_rng(5)))
    assert style.add_grain(grained, mask, 1.0, np.random.default_rng(5)) is grained


# -- head geometry -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parser() -> ParseNet:
    torch.manual_seed(0)
    return ParseNet(TINY_PARSENET).eval()


SOURCE_KPS = np.array([[100, 110], [156, 110], [128, 140], [108, 170], [148, 170]], np.float32)
DOT_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def dotted_source() -> np.ndarray:
    img = np.full((256, 256, 3), 40, np.uint8)
    for (x, y), colour in zip(SOURCE_KPS.astype(int), DOT_COLOURS):
        img[y - 4:y + 5, x - 4:x + 5] = colour
    return img


def similarity(scale: float, degrees: float, shift) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]],
                     [scale * np.sin(a), scale * np.cos(a), shift[1]]])


def face_with(kps: np.ndarray, side: float) -> Face:
    centre = kps.mean(axis=0)
    bbox = np.concatenate([centre - side / 2, centre + side / 2]).astype(np.float32)
    return Face(bbox=bbox, kps=kps.astype(np.float32), det_score=1.0)


@pytest.mark.parametrize("box_ratio", [1.0, 1.5])
def test_warp_source_head_lands_the_source_keypoints_on_the_target(parser, box_ratio):
    source = dotted_source()
    source_face = face_with(SOURCE_KPS, 100.0)
    known = similarity(0.8, 12.0, (60.0, 20.0))
    target_kps = SOURCE_KPS @ known[:, :2].T + known[:, 2]
    # A target box box_ratio times larger than the keypoints imply asks for the extra zoom (§6.4 step 6).
    target_face = face_with(target_kps, 80.0 * box_ratio)
    target_shape = (300, 320, 3)
    warped, head, inner = swap.warp_source_head(parser, source, source_face, target_shape, target_face)

    m = estimate_similarity(SOURCE_KPS.astype(np.float64), target_kps.astype(np.float64))
    np.testing.assert_allclose(m, known, atol=1e-6)
    centre = target_kps.mean(axis=0)
    expected_kps = centre + box_ratio * (target_kps - centre)
    for (x, y), colour in zip(expected_kps, DOT_COLOURS):
        assert np.abs(warped[int(round(y)), int(round(x))].astype(int) - colour).max() <= 2
    zoom = np.array([[box_ratio, 0, (1 - box_ratio) * centre[0]], [0, box_ratio, (1 - box_ratio) * centre[1]]])
    expected_m = zoom[:, :2] @ known[:, :2], zoom[:, :2] @ known[:, 2] + zoom[:, 2]
    expected_m = np.hstack([expected_m[0], expected_m[1][:, None]])
    # The masks travel with the image: the same matrix warps the source's parse.
    parsing = swap.parse_in_frame(parser, source, swap.head_affine(source_face.kps))
    moved = cv2.warpAffine(parsing, expected_m, (320, 300), flags=cv2.INTER_NEAREST, borderValue=0)
    assert warped.shape == target_shape and head.shape == inner.shape == target_shape[:2]
    assert np.mean(head != masks.class_mask(moved, masks.HEAD)) < 1e-3
    assert np.mean(inner != masks.class_mask(moved, masks.INNER_CORE)) < 1e-3
    assert np.all(head[inner > 0] == 1)


def test_compose_head_keeps_the_inner_face_and_pastes_the_outer_head():
    swapped = np.full((128, 128, 3), 50, np.uint8)
    source = np.full((128, 128, 3), 200, np.uint8)
    head = ellipse((128, 128), (64, 64), (54, 60))  # top at y = 4
    inner = ellipse((128, 128), (64, 70), (14, 16))  # top at y = 54
    composed, pasted = swap.compose_head(swapped, source, head, inner)
    assert np.all(composed[inner > 0] == 50)
    assert np.all(composed[18:26, 60:68] == 200)  # the top of the head: the source's hair
    assert all(np.all(corner == 50) for corner in (composed[:8, :8], composed[:8, -8:], composed[-8:, :8]))
    assert pasted.max() <= 1 and pasted[inner > 0].max() < 0.5 / 255  # below one grey level


# -- inpainter modes -----------------------------------------------------------------------------


def test_working_size_examples():
    assert working_size(1024, 768, 1024) == (1024, 768)
    assert working_size(512, 512, 1024) == (1024, 1024)
    assert working_size(100, 50, 64) == (64, 32)
    assert working_size(33, 1000, 64) == (8, 64)


@settings(max_examples=200, deadline=None)
@given(h=st.integers(8, 4000), w=st.integers(8, 4000), base=st.sampled_from([64, 128, 512, 1024]))
def test_working_size_keeps_aspect_in_multiples_of_eight(h, w, base):
    wh, ww = working_size(h, w, base)
    assert wh % 8 == 0 and ww % 8 == 0 and max(wh, ww) == base
    assert abs(wh - h * base / max(h, w)) <= 4 + (8 if min(h, w) * base / max(h, w) < 8 else 0)
    assert abs(ww - w * base / max(h, w)) <= 4 + (8 if min(h, w) * base / max(h, w) < 8 else 0)


def lightning_state(unet) -> set[bool]:
    """Whether each LoRA layer of the UNet currently applies the Lightning adapter."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from pipelines.common.inpainter import LIGHTNING_ADAPTER

    return {not m.disable_adapters and LIGHTNING_ADAPTER in m.active_adapters
            for m in unet.modules() if isinstance(m, BaseTunerLayer)}


def record_unet_calls(inpainter, model_type: str, strength: float) -> list[dict]:
    """Run one inpaint and record, at every UNet call, the sampler, its schedule and the LoRA state."""
    pipe = inpainter.pipe
    calls = []

    def hook(module, args, kwargs):
        calls.append({"scheduler": type(pipe.scheduler).__name__, "config": dict(pipe.scheduler.config),
                      "timestep": float(args[1] if len(args) > 1 else kwargs["timestep"]),
                      "batch": int(args[0].shape[0]), "lightning": lightning_state(pipe.unet)})

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        image = np.full((40, 56, 3), 120, np.uint8)
        mask = np.zeros((40, 56), np.float32)
        mask[10:30, 15:40] = 1
        out = inpainter.inpaint(image, mask, "a face", "blurry", model_type, strength, torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert out.shape == image.shape and out.dtype == np.uint8
    return calls


def test_speed_runs_lightning_on_trailing_euler(faceswap):
    inpainter = faceswap.c.inpainter
    assert inpainter.has_lightning
    for model_type in ("quality", "speed"):  # speed after quality: the switch goes both ways
        calls = record_unet_calls(inpainter, model_type, 1.0)
    assert len(calls) == MODES["speed"].steps == 8
    assert {c["scheduler"] for c in calls} == {"EulerDiscreteScheduler"}
    assert calls[0]["config"]["timestep_spacing"] == "trailing"
    # SDXL-Lightning's 8-step trailing schedule starts at the last training timestep.
    assert [c["timestep"] for c in calls] == [999, 874, 749, 624, 499, 374, 249, 124]
    assert all(c["lightning"] == {True} for c in calls)
    assert all(c["batch"] == 1 for c in calls)  # CFG 1: no unconditional half


def test_quality_runs_the_base_on_dpmpp_2m_karras(faceswap):
    inpainter = faceswap.c.inpainter
    for model_type in ("speed", "quality"):
        calls = record_unet_calls(inpainter, model_type, 0.2)
    # model_type sets the scheduled steps; diffusers runs int(steps * strength) of them (§6.3 step 7).
    assert len(calls) == int(MODES["quality"].steps * 0.2) == 6
    assert {c["scheduler"] for c in calls} == {"DPMSolverMultistepScheduler"}
    config = calls[0]["config"]
    assert config["algorithm_type"] == "dpmsolver++" and config["solver_order"] == 2
    assert config["use_karras_sigmas"] is True
    assert all(c["lightning"] == {False} for c in calls)
    assert all(c["batch"] == 2 for c in calls)  # CFG 5: conditional and unconditional together
