"""consistent-character's in-house pose library: keypoint data rendered into hints per request.

Spec sticker-and-character.md §3.4: each pose is stored as normalised keypoints
(``poses/half_body.json``, written by ``scripts/author_pose_library.py``), and both hints are drawn
at the request's size: the InstantID 5-point image for the IdentityNet and the OpenPose skeleton
for OpenPose-XL. Drawing at the target size (rather than drawing once and resizing) keeps line
widths and dot radii at the pixel sizes both ControlNets were trained with; the canvas is
centre-cropped to the target's aspect exactly as ComfyUI crops a hint (§4.5 item 7).

Pose selection (§3.2, decision): a per-request copy is shuffled by a generator seeded from the
request seed, so the same seed gives the same poses and no request changes another's order.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipelines.common.control_hint import center_crop_box
from pipelines.common.kps_image import draw_kps
from pipelines.common.openpose_render import PersonPose, render_openpose

HALF_BODY = Path(__file__).resolve().parent / "poses" / "half_body.json"


@dataclass(frozen=True)
class Pose:
    """One library pose: its canvas (width, height), one person's keypoints and the five InstantID
    points, all normalised to the canvas."""

    name: str
    canvas: tuple[int, int]
    person: PersonPose
    kps: np.ndarray


def _optional(points) -> np.ndarray | None:
    return None if points is None else np.asarray(points, dtype=np.float64)


def parse_pose(entry: dict) -> Pose:
    body = np.asarray(entry["body"], dtype=np.float64)
    person = PersonPose(
        body=body[:, :2], body_valid=body[:, 2] > 0, left_hand=_optional(entry["left_hand"]),
        right_hand=_optional(entry["right_hand"]), face=_optional(entry["face"]),
    )
    return Pose(entry["name"], tuple(entry["canvas"]), person, np.asarray(entry["kps"], dtype=np.float64))


@lru_cache(maxsize=None)
def load_pose_library(path: Path = HALF_BODY) -> tuple[Pose, ...]:
    return tuple(parse_pose(entry) for entry in json.loads(Path(path).read_text())["poses"])


def to_target(points: np.ndarray | None, canvas: tuple[int, int], width: int, height: int) -> np.ndarray | None:
    """Canvas-normalised points → target-normalised points after ComfyUI's centre crop."""
    if points is None:
        return None
    cw, ch = canvas
    x0, y0, x1, y1 = center_crop_box(cw, ch, width, height)
    return np.stack([(points[:, 0] * cw - x0) / (x1 - x0), (points[:, 1] * ch - y0) / (y1 - y0)], axis=1)


def render_pose_hint(pose: Pose, width: int, height: int) -> np.ndarray:
    """The OpenPose-XL hint: body, hands and face on black, (height, width, 3) uint8 RGB."""
    p = pose.person
    person = PersonPose(
        body=to_target(p.body, pose.canvas, width, height), body_valid=p.body_valid,
        left_hand=to_target(p.left_hand, pose.canvas, width, height),
        right_hand=to_target(p.right_hand, pose.canvas, width, height),
        face=to_target(p.face, pose.canvas, width, height),
    )
    return render_openpose([person], height, width)


def render_kps_hint(pose: Pose, width: int, height: int) -> np.ndarray:
    """The IdentityNet hint: the InstantID 5-point drawing in pixels of the target."""
    kps = to_target(pose.kps, pose.canvas, width, height) * np.array([width, height], dtype=np.float64)
    return draw_kps(kps, width, height)


def choose_poses(library: tuple[Pose, ...], count: int, randomise: bool, seed: int) -> list[Pose]:
    """The first ``count`` poses of the library, or of a copy shuffled under ``seed``."""
    order = list(library)
    if randomise:
        random.Random(seed).shuffle(order)
    return order[:count]
