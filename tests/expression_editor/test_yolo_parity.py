"""YOLOv8 face detector parity (shared/parity/yolov8_face/README.md).

Weights come from the shared rule (README §2), are written as an ultralytics-layout ``.pt`` and
read back through the production restricted loader; the fixture's own ``.pt`` must load to the
same tensors. Letterbox, network, head decoding, NMS and rescaling are then compared stage by stage.
"""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from pipelines.common.tiny_yolo import write_tiny_yolo, write_ultralytics_checkpoint
from pipelines.common.yolo_detect import (
    DetectorSettings, YoloDetector, decode_head, letterbox_geometry, letterbox_image, network_input,
    non_max_suppression, scale_boxes)
from pipelines.common.yolo_face import FACE_YOLOV8N
from pipelines.common.yolo_loader import DillPickledCheckpoint, RestrictedUnpickler, load_yolo_face
from pipelines.expression_editor.face_box import select_face_box
from tests.parity.fixtures import assert_close, assert_opencv_u8, load_npz, params, state_dict_for

MODULE = "yolov8_face"
CASES = [(image, mode) for image in "abc" for mode in ("square", "rect")]
THRESHOLDS = {"c070": 0.7, "c025": 0.25, "c001": 0.01}


def fixture_weights(path) -> dict[str, np.ndarray]:
    """README §2: rule v2, the fixed DFL bins, float16 storage."""
    state = state_dict_for(path, MODULE)
    state["model.22.dfl.conv.weight"] = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
    return {k: v.astype(np.float16).astype(np.float32) if v.dtype == np.float32 else v for k, v in state.items()}


@pytest.fixture(scope="module", params=params(MODULE, MODULE))
def case(request, tmp_path_factory):
    path = request.param
    checkpoint = tmp_path_factory.mktemp("yolo") / "face_yolov8n.pt"
    weights = fixture_weights(path)
    write_ultralytics_checkpoint(checkpoint, FACE_YOLOV8N, weights)
    torch.manual_seed(0)
    return path, load_npz(path), weights, load_yolo_face(checkpoint)


def test_loaded_weights_are_exact(case):
    path, _, weights, network = case
    got = network.state_dict()
    assert set(got) == set(weights)
    for key, value in weights.items():
        assert np.array_equal(got[key].numpy(), value), key
    shipped = path.with_suffix(".pt")
    if shipped.exists():
        from_fixture = load_yolo_face(shipped).state_dict()
        for key, value in weights.items():
            assert np.array_equal(from_fixture[key].numpy(), value), f"{shipped.name}: {key}"


def test_letterbox(case):
    _, fx, _, _ = case
    for image, mode in CASES:
        src = fx[f"in_image_{image}_u8"]
        geometry = letterbox_geometry(src.shape[:2], minimal_padding=mode == "rect")
        geom = [*geometry.resized_hw, geometry.top, geometry.bottom, geometry.left, geometry.right]
        assert geom == fx[f"out_{image}_{mode}_letterbox_geom"].tolist(), (image, mode)
        x = network_input(letterbox_image(src, geometry))
        # cv2.resize: exact on the fixtures' machine, one level in at most 0.5 % of values elsewhere.
        assert_opencv_u8((x * 255).round().to(torch.uint8).numpy(), fx[f"out_{image}_{mode}_letterbox_u8"],
                         f"{image} {mode} letterbox")


@torch.no_grad()
def test_network_layers_and_head(case):
    _, fx, _, network = case
    x = torch.from_numpy(fx["out_a_square_letterbox_u8"]).float() / 255
    outputs = network.layer_outputs(x)
    for i, out in enumerate(outputs):
        flat = out.reshape(-1).numpy()[fx[f"mid_a_square_layer{i:02d}_sub_idx"]]
        assert_close(flat, fx[f"mid_a_square_layer{i:02d}_sub"], f"layer{i:02d}")
    box, cls, level_hw = network.detect([outputs[i] for i in (15, 18, 21)])
    assert_close(box.reshape(-1).numpy()[fx["mid_a_square_box_logits_sub_idx"]], fx["mid_a_square_box_logits_sub"],
                 "box_logits")
    assert_close(cls.numpy(), fx["out_a_square_cls_logits"], "cls_logits")


@torch.no_grad()
def test_raw_output_every_image_and_mode(case):
    _, fx, _, network = case
    for image, mode in CASES:
        x = torch.from_numpy(fx[f"out_{image}_{mode}_letterbox_u8"]).float() / 255
        raw = decode_head(*network(x), network.stride.tolist(), network.detect.dfl.bin_values()).numpy()
        ref = fx[f"out_{image}_{mode}_raw"]
        assert_close(raw[:, :4], ref[:, :4], f"{image}_{mode} boxes")
        assert_close(raw[:, 4], ref[:, 4], f"{image}_{mode} scores")
        # At the node's threshold no anchor of these random weights is a face (README §10).
        detections, keep = non_max_suppression(torch.from_numpy(raw), 0.7)
        assert len(detections) == len(fx[f"out_{image}_{mode}_nms_c070"]) == 0


def test_dfl_decoding(case):
    _, fx, _, _ = case
    h, w = fx["in_synth_dfl_input_hw"].tolist()
    level_hw = [(h // s, w // s) for s in (8, 16, 32)]
    raw = decode_head(torch.from_numpy(fx["in_synth_dfl_box_logits"]), torch.from_numpy(fx["in_synth_dfl_cls_logits"]),
                      level_hw, [8.0, 16.0, 32.0], torch.arange(16, dtype=torch.float32))
    assert_close(raw.numpy(), fx["out_synth_dfl_raw"], "synth_dfl_raw")


def check_nms(raw: np.ndarray, fx: dict, prefix: str, tag: str):
    detections, keep = non_max_suppression(torch.from_numpy(raw), THRESHOLDS[tag], float(fx["meta_iou"]),
                                           int(fx["meta_max_det"]))
    assert keep.tolist() == fx[f"{prefix}_keep_{tag}"].tolist(), f"{prefix} {tag} keep"
    assert_close(detections.numpy(), fx[f"{prefix}_nms_{tag}"], f"{prefix} {tag} nms")
    return detections.numpy()


def test_nms_and_rescale_on_stored_raw(case):
    _, fx, _, _ = case
    for image, mode in CASES:
        prefix = f"out_{image}_{mode}"
        input_hw = fx[f"{prefix}_letterbox_u8"].shape[2:]
        for tag in THRESHOLDS:
            detections = check_nms(fx[f"{prefix}_raw"], fx, prefix, tag)
            # The fixture is ultralytics 8.4: per-axis rescaling in both letterbox modes (README §7).
            boxes = scale_boxes(detections[:, :4], input_hw, fx[f"in_image_{image}_u8"].shape[:2], True)
            assert_close(boxes, fx[f"{prefix}_boxes_{tag}"][:, :4], f"{prefix} {tag} boxes")


def test_synthetic_nms_and_rescale(case):
    _, fx, _, _ = case
    for tag in THRESHOLDS:
        detections = check_nms(fx["in_synth_raw"], fx, "out_synth", tag)
        for image in "bc":
            boxes = scale_boxes(detections[:, :4], (640, 640), fx[f"in_image_{image}_u8"].shape[:2], True)
            assert_close(boxes, fx[f"out_synth_boxes_{image}_{tag}"][:, :4], f"synth {image} {tag}")
            assert_close(detections[:, 4:], fx[f"out_synth_boxes_{image}_{tag}"][:, 4:], f"synth {image} {tag} score")


def test_single_gain_rescale_of_older_releases():
    # Spec §2.7: ≤ 8.3 divides by one gain; a 512-wide image in a 640 square: gain 0.8889, pad 92.
    boxes = scale_boxes(np.array([[92.0, 0.0, 548.0, 640.0]]), (640, 640), (720, 512))
    gain = 640 / 720
    pad = round((640 - 512 * gain) / 2 - 0.1)
    assert_close(boxes, [[(92 - pad) / gain, 0, 512, 720]])


def test_node_box_selection():
    boxes = np.array([[0, 0, 29, 50], [10, 0, 60, 50], [150, 0, 200, 50], [250, 0, 300, 50]], np.float32)
    assert select_face_box(boxes, 400) == (150, 0, 200, 50)          # centre 175 is closest to 200
    assert select_face_box(boxes[:1], 400) is None                   # narrower than 30 px
    tie = np.array([[100, 0, 150, 10], [250, 0, 300, 10]], np.float32)  # both 75 px from the centre
    assert select_face_box(tie, 400) == (100, 0, 150, 10)


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil(), protocol=2))).load()


def test_dill_pickled_original_is_refused():
    dill_pickle = b"\x80\x02cdill._dill\n_load_type\nX\x04\x00\x00\x00listq\x00\x85q\x01Rq\x02."
    with pytest.raises(DillPickledCheckpoint):
        RestrictedUnpickler(io.BytesIO(dill_pickle)).load()


def test_tiny_yolo_loads_and_detects(tmp_path):
    path = tmp_path / "face_yolov8n.pt"
    write_tiny_yolo(path)
    assert path.stat().st_size < 2_000_000
    network = load_yolo_face(path)
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = YoloDetector(network).detect(image)
    assert boxes.ndim == 2 and boxes.shape[1] == 6
    every = YoloDetector(network, DetectorSettings(conf=0.0)).detect(image)
    assert 0 < len(every) <= 300
    assert (every[:, [0, 2]] <= 160).all() and (every[:, [1, 3]] <= 120).all() and (every[:, :4] >= 0).all()
