"""The node math on known inputs (spec §4), and the pipeline on tiny checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from pipelines.base import InputError
from pipelines.expression_editor import editor
from pipelines.expression_editor.editor import MotionInfo, Sliders
from pipelines.expression_editor.params import Params
from pipelines.expression_editor.pipeline import ExpressionEditorPipeline
from pipelines.expression_editor.tiny import write_tiny_liveportrait
from pipelines.common.tiny_yolo import write_tiny_yolo
from server.protocol import params_for
from tests.parity.fixtures import assert_close


def test_crop_region_centred_box():
    # 100×80 box → side 170, centre (150, 140): inside a 400×300 image.
    assert editor.crop_region((100, 100, 200, 180), (400, 300)) == (65, 55, 235, 225)


def test_crop_region_shifts_inside_then_shrinks_corner_overflow():
    assert editor.crop_region((0, 0, 40, 40), (400, 300)) == (0, 0, 68, 68)          # shifted right/down
    assert editor.crop_region((360, 100, 400, 140), (400, 300)) == (332, 86, 400, 154)  # shifted left
    # Taller than the image: shifted up to 0 and still past the bottom; not past the right edge.
    region = editor.crop_region((80, 40.5, 250, 215), (320, 256))
    assert region == (16, 0, 313, 296)
    # Past both the right and the bottom edge: both shrink by the smaller overflow.
    assert editor.crop_region((0, 0, 100, 100), (150, 160)) == (0, 0, 160, 160)  # 170 side, over by 20 and 10
    assert editor.crop_region(None, (320, 256)) == (0, 0, 320, 256)


def test_clipped_crop_transforms_and_padding():
    region = (16, 0, 313, 296)
    mask_m, image_m = editor.crop_transforms(region, (320, 256))
    assert np.array_equal(mask_m, np.float32([[297 / 512, 0, 16], [0, 256 / 512, 0]]))
    assert np.array_equal(image_m, np.float32([[297 / 512, 0, 16], [0, 297 / 512, 0]]))
    image = np.full((256, 320, 3), 200, np.uint8)
    face = editor.face_crop(image, region)
    assert face.shape == (296, 297, 3) and (face[256:] == 0).all() and (face[:256] == 200).all()
    same_m, same_i = editor.crop_transforms((10, 10, 110, 110), (320, 256))
    assert same_m is same_i


def test_mask_template_formula():
    mask = editor.mask_template()[..., 0].astype(int)
    assert mask.shape == (512, 512) and (mask[16:497, 16:497] == 255).all()
    assert mask[256, :17].tolist() == [0] + [16 * k - 1 for k in range(1, 16)] + [255]
    assert mask[0, 0] == 0 and mask[5, 5] == round(255 - 16 * math.hypot(11, 11))


def test_network_input_resize_rule():
    tall = np.zeros((300, 200, 3), np.uint8)
    assert editor.network_input(tall).shape == (1, 3, 256, 256)
    face = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert torch.equal(editor.network_input(face)[0].permute(1, 2, 0), torch.from_numpy(face).float() / 255)


def test_rotation_matrix_is_rz_ry_rx_transposed():
    p, y, r = (torch.tensor([[a]]) for a in (10.0, -20.0, 30.0))
    rt = editor.rotation_matrix_t(p, y, r)[0].double()
    a, b, c = (math.radians(v) for v in (10.0, -20.0, 30.0))
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    assert_close(rt, (rz @ ry @ rx).T)


def zero_motion(**overrides) -> MotionInfo:
    info = dict(kp=torch.zeros(1, 21, 3), exp=torch.zeros(1, 21, 3), pitch=torch.zeros(1, 1), yaw=torch.zeros(1, 1),
                roll=torch.zeros(1, 1), t=torch.zeros(1, 3), scale=torch.ones(1, 1))
    return MotionInfo(**(info | overrides))


def test_slider_table_and_angles():
    delta = torch.zeros(1, 21, 3)
    angles = editor.slider_edit(delta, editor.command_angles(Sliders(rotate_yaw=4, aaa=10, wink=2)),
                                Sliders(rotate_yaw=4, aaa=10, wink=2))
    assert_close(angles, [-0.5, -4 - 0.2, -0.2])                 # yaw negated; aaa and wink side effects
    assert_close(delta[0, 19], [0, 0.01, 0.001])
    assert_close(delta[0, 11, 1], 0.002)
    delta = torch.zeros(1, 21, 3)
    editor.slider_edit(delta, [0, 0, 0], Sliders(pupil_y=2))   # pupil_y also moves eyes by −py/2
    assert_close(delta[0, 11, 1], -0.002 + 0.001)
    assert_close(delta[0, 1, 1], 0.00025)
    delta = torch.zeros(1, 21, 3)
    editor.slider_edit(delta, [0, 0, 0], Sliders(eyebrow=-2, pupil_x=-1))
    assert_close(delta[0, 1], [0.002, -0.0006, 0])
    assert_close(delta[0, 15, 0], -0.0007)


def test_reference_parts():
    ref_exp = editor.reference_expression(torch.ones(1, 21, 3))
    assert ref_exp[0, 5].tolist() == [0, 0, 1]
    pose = (torch.full((1, 1), 3.0), torch.full((1, 1), 4.0), torch.full((1, 1), 5.0))
    for parts, changed, rotated in [("OnlyMouth", editor.MOUTH_KEYPOINTS, False),
                                    ("OnlyEyes", editor.EYE_KEYPOINTS, False),
                                    ("OnlyRotation", (), True), ("All", tuple(range(21)), True)]:
        delta, angles = torch.zeros(1, 21, 3), [1.0, 1.0, 1.0]
        editor.reference_edit(delta, angles, ref_exp, pose, parts, 0.5)
        touched = {k for k in range(21) if delta[0, k].abs().sum() > 0}
        assert touched == set(changed), parts
        assert [float(a) for a in angles] == ([2.5, 3.0, 3.5] if rotated else [1.0, 1.0, 1.0]), parts


def test_driving_keypoints_rotate_expression_and_add_tz():
    info = zero_motion(kp=torch.zeros(1, 21, 3), exp=torch.zeros(1, 21, 3).index_fill_(2, torch.tensor([0]), 0.1),
                       t=torch.tensor([[0.1, 0.2, 0.3]]), scale=torch.full((1, 1), 2.0))
    x_d = editor.driving_keypoints(info, editor.expression_base(info), torch.zeros(1, 21, 3),
                                   torch.tensor([0.0, 90.0, 0.0]))
    # Yaw 90°: x → −z for the row vector (0.1, 0, 0); then ×2 and + (tx, ty, tz).
    assert_close(x_d[0, 0], [0.1, 0.2, 0.3 - 0.2], atol=1e-6)
    x_s = editor.source_keypoints(info)
    assert_close(x_s[0, 0], [0.2 + 0.1, 0.2, 0.0])               # no tz on the source


def test_stitching_application():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.arange(65, dtype=torch.float32)[None] / 100

    x = torch.zeros(1, 21, 3)
    out = editor.stitched(Fixed(), x, x)
    assert_close(out[0, 2], [0.06 + 0.63, 0.07 + 0.64, 0.08])


def test_truncation_and_paste_back():
    decoded = torch.full((1, 3, 512, 512), 0.999)
    crop = editor.truncated_u8(decoded)
    assert (crop == 254).all()                                   # 254.745 truncates, not rounds
    source = np.full((100, 120, 3), 10, np.uint8)
    mask_m, image_m = editor.crop_transforms((0, 0, 120, 100), (120, 100))
    out = editor.paste_back(crop, source, image_m, editor.source_mask(mask_m, (120, 100)))
    assert out[50, 60].tolist() == [254] * 3 and out[0, 0].tolist() == [10] * 3


def editor_params(**fields) -> Params:
    """Params as the server builds them: the protocol's defaults for every field not given."""
    return params_for("expression-editor", Params, **fields)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_expression_editor")
    files = write_tiny_liveportrait(root)
    files["yolov8n_face"] = root / "yolov8n_face" / "face_yolov8n.pt"
    write_tiny_yolo(files["yolov8n_face"])
    return ExpressionEditorPipeline.from_files(files)


def test_tiny_detector_fires_predictably(tiny_pipeline):
    # tiny_yolo.predictable_face_head: the top-row stride-32 box nearest the horizontal centre,
    # 256 letterbox px square (x1.25 on the 512 px astronaut); none at all on black.
    boxes = tiny_pipeline.detector.detect(astronaut())
    assert len(boxes) > 0 and (boxes[:, 4] == 1.0).all()
    assert_close(tiny_pipeline.face_box(astronaut()), [166.4, 0, 371.2, 115.2], atol=1e-3)
    assert len(tiny_pipeline.detector.detect(np.zeros((64, 64, 3), np.uint8))) == 0


def test_tiny_pipeline_outputs(tiny_pipeline):
    image = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    full = tiny_pipeline(editor_params(smile=0.5), {"image": image}, seed=0)
    crop = tiny_pipeline(editor_params(smile=0.5, output="crop", sample_parts="All"),
                         {"image": image, "ref_expression_image": image}, seed=0).images[0]
    assert full.images[0].shape == image.shape and full.images[0].dtype == np.uint8
    # The tiny detector's box, x 41.6-92.8 and y 0-28.8 (letterbox scale 5), widened by 1.7 (§4.2).
    assert full.info["crop_region"] == [23, 0, 110, 86]
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    assert {c["id"] for c in tiny_pipeline.components()} >= {"yolov8n_face", "liveportrait.spade_generator"}


def test_no_face_is_an_input_error(tiny_pipeline):
    blank = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="no face"):
        tiny_pipeline(editor_params(), {"image": blank}, seed=0)
    tiny_pipeline.free_memory()
