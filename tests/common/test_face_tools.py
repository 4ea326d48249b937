"""The InsightFace face tools on known geometry and on the tiny ONNX doubles (specs/faceswap.md §3, §9)."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipelines.common import tiny_insightface as tiny
from pipelines.common.alignment import (
    ARCFACE_112,
    estimate_norm,
    estimate_similarity,
    inswapper_template,
    norm_crop,
    transform_points,
)
from pipelines.common.arcface import ArcFace, normalises_internally
from pipelines.common.color_transfer import bgr_to_lab, masked_mean_std, skin_mask, transfer_lab_stats
from pipelines.common.face_types import Face, faces_by_size, largest_face
from pipelines.common.inswapper import INSwapper, align_for_swap, merge_polyphase, split_polyphase
from pipelines.common.nms import nms
from pipelines.common.onnx_session import CudaUnavailable, onnx_session, providers_for
from pipelines.common.paste_back import crop_footprint, feathered_box_mask, paste_back, warp_to_frame
from pipelines.common.scrfd import SCRFD, detections_from_outputs, letterbox_size


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    tiny.write_tiny_insightface(root)
    return root


def white_square_image() -> np.ndarray:
    """§9.4's probe: 640x480 black with a filled white rectangle (300, 200)-(330, 230)."""
    img = np.zeros((480, 640, 3), np.uint8)
    cv2.rectangle(img, (300, 200), (330, 230), (255, 255, 255), -1)
    return img


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx],
                     [scale * math.sin(a), scale * math.cos(a), ty]])


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


# --- tiny ONNX doubles through the production loaders ---------------------------------------


def test_tiny_files_are_small_and_at_manifest_paths(tiny_dir: Path):
    for rel in (tiny.DET_10G, tiny.W600K_R50, tiny.SCRFD_10G_BNKPS, tiny.GLINTR100, tiny.INSWAPPER_128):
        path = tiny_dir / rel
        assert path.is_file(), rel
        assert path.stat().st_size < 2_000_000, rel


def test_tiny_files_keep_the_io_contracts(tiny_dir: Path):
    det = onnx.load(str(tiny_dir / tiny.DET_10G)).graph
    assert [i.name for i in det.input] == ["input.1"]
    dims = det.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == [1, 3, "?", "?"]
    assert [o.name for o in det.output] == ["448", "471", "494", "451", "474", "497", "454", "477", "500"]

    rec = onnx.load(str(tiny_dir / tiny.W600K_R50))
    assert [o.name for o in rec.graph.output] == ["683"]
    assert not normalises_internally(rec)
    assert [o.name for o in onnx.load(str(tiny_dir / tiny.GLINTR100)).graph.output] == ["1333"]

    swap = onnx.load(str(tiny_dir / tiny.INSWAPPER_128)).graph
    assert [i.name for i in swap.input] == ["target", "source"]
    assert [o.name for o in swap.output] == ["output"]
    assert swap.initializer[-1].name == "buff2fs" and list(swap.initializer[-1].dims) == [512, 512]
    assert all("buff2fs" not in n.input for n in swap.node)


def test_session_factory_caches_one_session_per_file(tiny_dir: Path):
    path = tiny_dir / tiny.DET_10G
    assert onnx_session(path, "cpu") is onnx_session(str(path), "cpu")
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(FileNotFoundError):
        onnx_session(tiny_dir / "missing.onnx")


def test_cuda_without_onnxruntime_cuda_is_an_error_not_a_cpu_fallback(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(CudaUnavailable, match="no CUDAExecutionProvider"):
        providers_for("cuda:0")
    assert providers_for(None) == ["CPUExecutionProvider"]  # no device asked for: whatever is there


def test_providers_prefer_cuda_when_onnxruntime_has_it(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers_for(None) == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert providers_for("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert providers_for("cpu") == ["CPUExecutionProvider"]


def test_tiny_detector_finds_the_white_square(tiny_dir: Path):
    for rel in (tiny.DET_10G, tiny.SCRFD_10G_BNKPS):
        faces = SCRFD(tiny_dir / rel, device="cpu").detect_faces(white_square_image())
        assert len(faces) == 1
        np.testing.assert_allclose(faces[0].bbox, [272, 176, 368, 272], atol=1e-4)
        np.testing.assert_allclose(
            faces[0].kps,
            [[298.4, 207.2], [341.6, 207.2], [320.0, 226.4], [303.2, 245.6], [336.8, 245.6]],
            atol=1e-4,
        )
        assert faces[0].det_score > 0.99
    assert SCRFD(tiny_dir / tiny.DET_10G).detect_faces(np.zeros((480, 640, 3), np.uint8)) == []


def test_tiny_recognisers_and_swapper_run(tiny_dir: Path):
    img = white_square_image()
    face = SCRFD(tiny_dir / tiny.DET_10G).detect_faces(img)[0]
    rec = ArcFace(tiny_dir / tiny.W600K_R50, device="cpu")
    assert (rec.input_mean, rec.input_std) == (127.5, 127.5)
    embedding = rec.get(img, face)
    assert embedding.shape == (512,) and embedding.dtype == np.float32
    assert abs(np.linalg.norm(face.normed_embedding) - 1) < 1e-5
    assert ArcFace(tiny_dir / tiny.GLINTR100).embed(img, face.kps).shape == (512,)

    swapper = INSwapper(tiny_dir / tiny.INSWAPPER_128, device="cpu")
    latent = swapper.latent(embedding)
    assert latent.shape == (1, 512) and abs(np.linalg.norm(latent) - 1) < 1e-5
    for size in (128, 256, 512):
        crop, m = align_for_swap(img, face.kps, size)
        swapped = swapper.swap_aligned(crop, latent)
        assert swapped.shape == (size, size, 3) and swapped.dtype == np.uint8
        assert m.shape == (2, 3)
    with pytest.raises(ValueError):
        swapper.swap_aligned(np.zeros((200, 200, 3), np.uint8), latent)


def test_recogniser_normalisation_is_detected_from_node_names():
    def graph_with(names):
        nodes = [helper.make_node("Identity", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"], name=n)
                 for i, n in enumerate(names)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info(f"t{len(names) - 1}", TensorProto.FLOAT, [1])])
        return helper.make_model(graph)

    assert normalises_internally(graph_with(["_minus0", "_mul1", "conv0"]))
    assert normalises_internally(graph_with(["Sub_0", "Mul_1"]))
    assert not normalises_internally(graph_with(["Sub_0", "Conv_1"]))
    # Only the first 8 nodes count (§3.2).
    assert not normalises_internally(graph_with(["Conv"] * 8 + ["Sub_9", "Mul_10"]))


# --- SCRFD decoding on constructed head outputs ------------------------------------------------


def constructed_outputs(faces, input_hw=(640, 640), background=0.01):
    """det_10g-shaped raw outputs with ``faces`` = [(stride, row, col, anchor, score, ltrb, kps)]
    where ``ltrb`` and ``kps`` (5, 2) are in pixels of the detector input."""
    scores, boxes, kps = [], [], []
    for s in (8, 16, 32):
        n = (input_hw[0] // s) * (input_hw[1] // s) * 2
        scores.append(np.full((n, 1), background, np.float32))
        boxes.append(np.zeros((n, 4), np.float32))
        kps.append(np.zeros((n, 10), np.float32))
    for stride, row, col, anchor, score, ltrb, points in faces:
        level = (8, 16, 32).index(stride)
        index = (row * (input_hw[1] // stride) + col) * 2 + anchor
        cx, cy = col * stride, row * stride
        scores[level][index] = score
        boxes[level][index] = np.array([cx - ltrb[0], cy - ltrb[1], ltrb[2] - cx, ltrb[3] - cy]) / stride
        kps[level][index] = ((np.asarray(points) - [cx, cy]) / stride).ravel()
    return scores + boxes + kps


def test_scrfd_decodes_known_boxes_and_keypoints():
    kps_a = np.array([[150, 90], [190, 92], [170, 110], [155, 130], [185, 131]], np.float64)
    kps_b = np.array([[420, 300], [500, 300], [460, 340], [430, 380], [490, 380]], np.float64)
    faces = [
        (8, 12, 21, 1, 0.93, (130, 60, 210, 150), kps_a),
        # A second, weaker detection of the same face: NMS removes it.
        (16, 6, 10, 0, 0.81, (132, 62, 212, 152), kps_a + 1),
        (32, 10, 14, 0, 0.97, (400, 260, 520, 420), kps_b),
        # Below the 0.5 threshold: never a candidate.
        (32, 2, 2, 1, 0.49, (40, 40, 80, 90), kps_a),
    ]
    det_scale = 0.5
    det, kps = detections_from_outputs(constructed_outputs(faces), (640, 640), det_scale, (1280, 1280))
    assert len(det) == 2
    np.testing.assert_allclose(det[:, 4], [0.97, 0.93], atol=1e-6)
    np.testing.assert_allclose(det[0, :4], np.array([400, 260, 520, 420]) / det_scale, atol=1e-3)
    np.testing.assert_allclose(det[1, :4], np.array([130, 60, 210, 150]) / det_scale, atol=1e-3)
    np.testing.assert_allclose(kps[0], kps_b / det_scale, atol=1e-3)
    np.testing.assert_allclose(kps[1], kps_a / det_scale, atol=1e-3)

    # max_num ranks by area minus twice the squared centre offset: the bigger, central face wins.
    det1, _ = detections_from_outputs(constructed_outputs(faces), (640, 640), det_scale, (1280, 1280), max_num=1)
    np.testing.assert_allclose(det1[0, :4], np.array([400, 260, 520, 420]) / det_scale, atol=1e-3)


def test_nms_uses_plus_one_areas_and_keeps_iou_at_most_threshold():
    base = [0, 0, 99, 99, 0.9]  # area 100 x 100 with the +1 convention
    # Shifted by 30 px: intersection 70 x 100 = 7000, union 13000, IoU 0.538 -> suppressed.
    # Shifted by 45 px: intersection 5500, union 14500, IoU 0.379 -> kept.
    dets = np.array([base, [30, 0, 129, 99, 0.8], [45, 0, 144, 99, 0.7], [300, 300, 320, 320, 0.95]],
                    np.float32)
    assert nms(dets[:, :4], dets[:, 4], 0.4, pixel_offset=1.0).tolist() == [3, 0, 2]


def test_letterbox_size_truncates_like_insightface():
    assert letterbox_size((560, 800)) == (448, 640)
    assert letterbox_size((720, 481)) == (640, 427)
    assert letterbox_size((480, 640)) == (480, 640)


# --- alignment ------------------------------------------------------------------------------


def synthetic_face(size: int = 112) -> np.ndarray:
    """A canonical face: coloured discs at the template points on a smooth background."""
    yy, xx = np.mgrid[:size, :size]
    img = np.stack([40 + xx, 60 + yy, 90 + (xx + yy) // 2], axis=-1).astype(np.uint8)
    for (x, y), colour in zip(ARCFACE_112 * size / 112, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]):
        cv2.circle(img, (int(round(x)), int(round(y))), 4, colour, -1, lineType=cv2.LINE_AA)
    return img


@pytest.mark.parametrize("scale,degrees,tx,ty", [(1.7, 23.0, 130.0, 80.0), (0.6, -140.0, 300.0, 250.0), (3.1, 5.0, 20.0, 10.0)])
def test_alignment_round_trip(scale, degrees, tx, ty):
    known = similarity(scale, degrees, tx, ty)  # canonical 112 crop -> frame
    frame = cv2.warpAffine(synthetic_face(), known, (640, 480))
    kps = transform_points(ARCFACE_112, known).astype(np.float32)

    crop, m = norm_crop(frame, kps, 112)
    # float32 keypoints (as SCRFD gives them) limit the match to ~1e-4 px of translation.
    np.testing.assert_allclose(m, invert(known), rtol=1e-5, atol=2e-3)
    recovered = transform_points(kps, m)
    assert np.abs(recovered - ARCFACE_112).max() < 0.01
    # The recovered crop is the canonical face again (up to interpolation, away from the frame edge).
    inner = (slice(20, 100), slice(20, 100))
    assert np.abs(crop[inner].astype(int) - synthetic_face()[inner]).mean() < 6


def test_similarity_is_exact_on_exact_points_and_never_reflects():
    src = np.random.default_rng(3).uniform(0, 400, (5, 2))
    known = similarity(0.8, 71.0, -12.0, 44.0)
    np.testing.assert_allclose(estimate_similarity(src, transform_points(src, known)), known, atol=1e-9)
    mirrored = src * [-1, 1]
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_estimate_norm_chooses_the_template_by_divisibility():
    kps = ARCFACE_112 * 2 + 50
    np.testing.assert_allclose(transform_points(kps, estimate_norm(kps, 224)), ARCFACE_112 * 2, atol=1e-3)
    np.testing.assert_allclose(transform_points(kps, estimate_norm(kps, 256)), inswapper_template(256), atol=1e-3)
    np.testing.assert_allclose(inswapper_template(128)[:, 0], ARCFACE_112[:, 0] + 8, atol=1e-5)
    with pytest.raises(ValueError):
        estimate_norm(kps, 100)


# --- paste-back --------------------------------------------------------------------------------


def test_paste_back_leaves_pixels_outside_the_mask_untouched():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    m = invert(similarity(0.7, 17.0, 150.0, 60.0))  # frame -> crop
    mask = feathered_box_mask(256, blur=0.3)
    out = paste_back(frame, crop, m, mask)

    warped_mask = warp_to_frame(mask, m, frame.shape[:2])
    outside = warped_mask == 0
    assert outside.sum() > 0.5 * outside.size
    assert np.array_equal(out[outside], frame[outside])
    # Where the mask is 1 the pasted crop shows through.
    inside = warped_mask >= 1 - 1e-6
    warped_crop = warp_to_frame(crop, m, frame.shape[:2])
    assert inside.sum() > 1000
    assert np.abs(out[inside].astype(int) - warped_crop[inside]).max() <= 1


def test_paste_back_outside_the_frame_changes_nothing():
    frame = np.full((100, 100, 3), 7, np.uint8)
    m = invert(similarity(0.5, 0.0, 500.0, 500.0))
    assert crop_footprint(m, 128, frame.shape[:2]) is None
    assert np.array_equal(paste_back(frame, np.zeros((128, 128, 3), np.uint8), m, np.ones((128, 128))), frame)


def test_feathered_box_mask_fades_to_zero_at_the_border():
    mask = feathered_box_mask(128, blur=0.3)
    assert mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
    assert mask[64, 64] == pytest.approx(1.0, abs=1e-4)
    assert mask[0].max() == 0 and mask[:, -1].max() == 0
    padded = feathered_box_mask(128, blur=0.3, padding=(0, 0, 20, 0))
    # 20 % bottom padding zeroes rows 103.. before the blur, which reaches 15 rows (3 sigma).
    assert padded[119:].max() == 0
    assert padded[100:].max() < mask[100:].max()


# --- pixel boost -------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_polyphase_split_and_merge_are_inverse(factor):
    img = np.random.default_rng(factor).integers(0, 256, (128 * factor, 128 * factor, 3), dtype=np.uint8)
    tiles = split_polyphase(img, factor)
    assert tiles.shape == (factor * factor, 128, 128, 3)
    for a in range(factor):
        for b in range(factor):
            assert np.array_equal(tiles[a * factor + b], img[a::factor, b::factor])
    assert np.array_equal(merge_polyphase(tiles, factor), img)


def identity_swapper(path: Path, batch) -> Path:
    """The inswapper interface with ``output = target``, to check the tiling around the model."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["target"], ["output"], name="Identity_0")],
        "identity_swapper",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [batch, 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, 128, 128])],
        initializer=[numpy_helper.from_array(rng.standard_normal((512, 512)).astype(np.float32), "buff2fs")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("batch", [1, "N"])
def test_pixel_boost_reassembles_an_identity_swapper_exactly(tmp_path: Path, batch):
    swapper = INSwapper(identity_swapper(tmp_path / f"identity_{batch}.onnx", batch), device="cpu")
    assert swapper.batched == (batch == "N")
    latent = swapper.latent(np.ones(512, np.float32))
    for size in (128, 256, 512):
        crop = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
        assert np.array_equal(swapper.swap_aligned(crop, latent), crop)


def test_batched_and_per_tile_swaps_agree(tmp_path: Path):
    onnx.save(tiny.tiny_inswapper_model(seed=4), str(tmp_path / "one.onnx"))
    onnx.save(tiny.tiny_inswapper_model(seed=4, batch="N"), str(tmp_path / "many.onnx"))
    one, many = INSwapper(tmp_path / "one.onnx"), INSwapper(tmp_path / "many.onnx")
    assert many.batched and not one.batched
    crop = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    latent = one.latent(np.random.default_rng(2).standard_normal(512).astype(np.float32))
    a, b = one.swap_aligned(crop, latent), many.swap_aligned(crop, latent)
    assert np.abs(a.astype(int) - b).max() <= 1


# --- colour transfer and face helpers --------------------------------------------------------


def test_lab_transfer_matches_the_reference_statistics_on_the_mask():
    rng = np.random.default_rng(5)
    img = np.clip(rng.normal((90, 120, 160), 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    ref = np.clip(rng.normal((60, 100, 190), 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    parsing = np.zeros((64, 64), np.int64)
    parsing[8:56, 8:56] = 1
    parsing[30:40, 28:36] = 10
    parsing[:8] = 17  # hair: excluded from the statistics
    mask = skin_mask(parsing)
    assert mask.sum() == 48 * 48
    out = transfer_lab_stats(img, ref, mask, mask)
    got_mean, got_std = masked_mean_std(bgr_to_lab(out), mask)
    ref_mean, ref_std = masked_mean_std(bgr_to_lab(ref), mask)
    np.testing.assert_allclose(got_mean, ref_mean, atol=0.5)
    np.testing.assert_allclose(got_std, ref_std, rtol=0.05, atol=0.5)
    assert np.array_equal(transfer_lab_stats(img, ref, np.zeros_like(mask), mask), img)


def test_largest_face_and_ordering():
    def face(x1, y1, x2, y2):
        return Face(bbox=np.array([x1, y1, x2, y2], np.float32), kps=np.zeros((5, 2), np.float32), det_score=0.9)

    small, big, mid = face(0, 0, 10, 10), face(0, 0, 50, 40), face(5, 5, 30, 30)
    assert largest_face([small, big, mid]) is big
    assert faces_by_size([small, big, mid]) == [big, mid, small]
    assert largest_face([]) is None
    with pytest.raises(ValueError):
        small.normed_embedding
