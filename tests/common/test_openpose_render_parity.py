"""OpenPose skeleton, hand and face drawing against controlnet_aux's ``draw_poses``
(shared/parity/sdxl_conditioning/README.md §3.4).

The reference draws integer, unantialiased OpenCV primitives; the README measured 0 changed pixels
of 4.5 M per seed when the coordinates were perturbed (float32 rounding) and identical repeated
runs. A pixel may still flip on another OpenCV build where a limb edge passes exactly through a
pixel centre, so the check allows a handful of pixels per image (``MAX_CHANGED_FRACTION``) rather
than bit-equality.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.common.openpose_render import PersonPose, render_openpose
from tests.parity.fixtures import load_npz, params

SUBDIR = "sdxl_conditioning"
MODULE = "openpose_render"
MAX_CHANGED_FRACTION = 1e-4
PARTS = {
    "out_pose_u8": dict(body=True, hands=True, face=True),
    "out_body_u8": dict(body=True, hands=False, face=False),
    "out_hands_u8": dict(body=False, hands=True, face=False),
    "out_face_u8": dict(body=False, hands=False, face=True),
}


def people_of(fixture: dict, case: str) -> list[PersonPose]:
    body = fixture[f"{case}/in_body_xy"]
    people = []
    for p in range(body.shape[0]):
        hands = [fixture[f"{case}/in_hands_xy"][p, h] if fixture[f"{case}/in_hands_present"][p, h] else None
                 for h in range(2)]
        face = fixture[f"{case}/in_face_xy"][p] if fixture[f"{case}/in_face_present"][p] else None
        people.append(PersonPose(body[p], fixture[f"{case}/in_body_valid"][p], hands[0], hands[1], face))
    return people


@pytest.mark.parametrize("path", params(SUBDIR, MODULE))
def test_openpose_render_parity_sdxl_conditioning(path):
    fixture = load_npz(path)
    compared = 0
    for case in fixture["cases"]:
        case = str(case)
        height, width = (int(v) for v in fixture[f"{case}/in_canvas_hw"])
        people = people_of(fixture, case)
        for key, parts in PARTS.items():
            ref = fixture[f"{case}/{key}"]
            got = render_openpose(people, height, width, **parts)
            assert got.shape == ref.shape and got.dtype == np.uint8, f"{case}/{key}"
            changed = np.any(got != ref, axis=-1).mean()
            assert changed <= MAX_CHANGED_FRACTION, f"{case}/{key}: {changed:.2e} of pixels differ"
            compared += 1
    assert compared == 4 * len(fixture["cases"]) > 0
