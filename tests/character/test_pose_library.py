"""The in-house pose library (sticker-and-character.md §3.4): data consistency, rendering at
several request sizes, and the seeded per-request pose order (§3.2)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pipelines.character.pose_library import (
    HALF_BODY, choose_poses, load_pose_library, render_kps_hint, render_pose_hint, to_target)
from pipelines.common.kps_image import KPS_COLOURS

SIZES = [(1024, 1024), (1536, 1536), (832, 1216), (1216, 832), (512, 640)]
LIBRARY = load_pose_library()


def test_library_has_thirty_distinct_half_body_poses():
    names = [p.name for p in LIBRARY]
    assert len(names) >= 30 and len(set(names)) == len(names)
    for pose in LIBRARY:
        assert not pose.person.body_valid[[9, 10, 12, 13]].any(), f"{pose.name}: knees/ankles in a half-body pose"
        assert pose.person.body_valid[[0, 1, 2, 5, 14, 15]].all(), pose.name


def test_kps_are_the_eye_centres_nose_tip_and_mouth_corners_of_the_face():
    for pose in LIBRARY:
        face = pose.person.face
        expected = np.stack([face[36:42].mean(0), face[42:48].mean(0), face[30], face[48], face[54]])
        np.testing.assert_allclose(pose.kps, expected, atol=2e-5, err_msg=pose.name)
        assert pose.kps[0, 0] < pose.kps[1, 0] and pose.kps[3, 0] < pose.kps[4, 0], pose.name


def test_stored_data_is_what_the_authoring_script_writes():
    path = Path(__file__).resolve().parents[2] / "scripts" / "author_pose_library.py"
    spec = importlib.util.spec_from_file_location("author_pose_library", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = load_pose_library.__wrapped__(HALF_BODY)
    fresh = [module.author_pose(name, *s) for name, s in module.POSES.items()]
    assert [p.name for p in rebuilt] == [f["name"] for f in fresh]
    for pose, entry in zip(rebuilt, fresh):
        np.testing.assert_allclose(pose.person.face, np.asarray(entry["face"]), atol=1e-9)


@pytest.mark.parametrize("width,height", SIZES)
def test_every_pose_renders_at_the_request_size(width, height):
    for pose in LIBRARY:
        skeleton = render_pose_hint(pose, width, height)
        kps = render_kps_hint(pose, width, height)
        assert skeleton.shape == kps.shape == (height, width, 3), pose.name
        assert skeleton.dtype == kps.dtype == np.uint8
        # Each InstantID dot is drawn last in its pure colour at its own pixel.
        points = to_target(pose.kps, pose.canvas, width, height) * [width, height]
        for (x, y), colour in zip(points.astype(int), KPS_COLOURS):
            assert tuple(kps[y, x]) == colour, f"{pose.name} at {width}x{height}"
        # The neck → right shoulder limb is drawn at 60 % of pure red, the nose dot in pure red.
        for colour in ((153, 0, 0), (255, 0, 0), (255, 255, 255)):
            assert (skeleton == colour).all(axis=-1).any(), f"{pose.name}: no {colour}"


def test_to_target_is_the_centre_crop():
    points = np.array([[0.5, 0.5], [0.25, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(to_target(points, (1024, 1024), 512, 512), points)
    # 1024² → 512×1024: the crop keeps x in [256, 768) of the canvas.
    np.testing.assert_allclose(to_target(points, (1024, 1024), 512, 1024), [[0.5, 0.5], [0.0, 0.0], [1.5, 1.0]])


def test_pose_order_is_seeded_and_never_mutates_the_library():
    before = tuple(LIBRARY)
    fixed = choose_poses(LIBRARY, 5, randomise=False, seed=1)
    assert fixed == list(LIBRARY[:5])
    a = [p.name for p in choose_poses(LIBRARY, 20, randomise=True, seed=42)]
    assert a == [p.name for p in choose_poses(LIBRARY, 20, randomise=True, seed=42)]
    others = {tuple(p.name for p in choose_poses(LIBRARY, 20, randomise=True, seed=s)) for s in range(43, 48)}
    assert tuple(a) not in others and len(others) == 5
    assert tuple(LIBRARY) == before
