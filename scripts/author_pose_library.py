"""Author consistent-character's in-house half-body pose library as keypoint data.

Spec sticker-and-character.md §3.4: the original pose PNGs are not copied; each pose is stored as
OpenPose-18 body points, both hands (21 points), 68 face points and the InstantID 5 face points,
normalised to a 1024² canvas, and rendered per request. Every pose here is a short description
(torso lean and turn, head yaw/pitch/roll, upper-arm and forearm angles, hand gestures) expanded
through a small 3D face model and a planar hand model, so the five InstantID points are by
construction the eye centres, the nose tip and the mouth corners of the 68-point face.

Run ``python scripts/author_pose_library.py`` to rewrite ``pipelines/character/poses/half_body.json``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

CANVAS = 1024
OUT = Path(__file__).resolve().parents[1] / "pipelines" / "character" / "poses" / "half_body.json"

# Half-body proportions in canvas pixels at scale 1: the head's eye line near y=300, hips near
# the bottom edge, knees and ankles below it (absent, as in a half-body photo).
EYE_DISTANCE = 62.0
NECK_BELOW_EYES = 175.0
SHOULDER_HALF_WIDTH = 135.0
HIP_HALF_WIDTH = 80.0
TORSO_LENGTH = 420.0
UPPER_ARM = 185.0
FOREARM = 165.0
PALM = 62.0


def _face_model() -> np.ndarray:
    """68 iBUG points in units of the eye-centre distance: x to image right, y down, z to the
    camera; origin between the eye centres."""
    pts = []
    for i in range(17):  # jaw, image-left ear to image-right ear through the chin
        t = math.pi * (i / 16.0)
        pts.append((-1.02 * math.cos(t), 0.05 + 1.62 * math.sin(t) ** 1.15, -0.75 + 0.85 * math.sin(t)))
    for side in (-1, 1):  # brows, image-left then image-right, inner end last/first as in iBUG
        xs = np.linspace(0.92, 0.18, 5) if side < 0 else np.linspace(0.18, 0.92, 5)
        for x in xs:
            pts.append((side * x, -0.38 - 0.1 * math.sin(math.pi * (x - 0.18) / 0.74), 0.05))
    for i, y in enumerate((0.0, 0.2, 0.4, 0.62)):  # nose bridge to tip
        pts.append((0.0, y, 0.12 + 0.11 * i))
    for x, dy in ((-0.22, 0.0), (-0.11, 0.03), (0.0, 0.05), (0.11, 0.03), (0.22, 0.0)):  # nostrils
        pts.append((x, 0.72 + dy, 0.2))
    for side in (-1, 1):  # eyes: outer corner, upper lid, inner corner, lower lid (clockwise)
        outer, inner = (-0.76, -0.26) if side < 0 else (0.26, 0.76)
        left, right = (outer, inner) if side < 0 else (inner, outer)
        w = right - left
        eye = [(left, 0.0), (left + w / 3, -0.09), (left + 2 * w / 3, -0.09),
               (right, 0.0), (left + 2 * w / 3, 0.08), (left + w / 3, 0.08)]
        pts.extend((x, y, 0.0) for x, y in eye)
    outer_lip = [(-0.42, 1.05), (-0.26, 0.96), (-0.1, 0.93), (0.0, 0.95), (0.1, 0.93), (0.26, 0.96),
                 (0.42, 1.05), (0.27, 1.16), (0.12, 1.21), (0.0, 1.22), (-0.12, 1.21), (-0.27, 1.16)]
    inner_lip = [(-0.34, 1.05), (-0.12, 1.02), (0.0, 1.03), (0.12, 1.02), (0.34, 1.05), (0.12, 1.08),
                 (0.0, 1.09), (-0.12, 1.08)]
    pts.extend((x, y, 0.18 - 0.25 * abs(x)) for x, y in outer_lip + inner_lip)
    return np.asarray(pts, dtype=np.float64)


FACE_MODEL = _face_model()
EAR_MODEL = np.array([[-1.12, 0.45, -1.0], [1.12, 0.45, -1.0]])  # subject's right ear, then left


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _direction(angle_from_down: float, outward: float) -> np.ndarray:
    """Unit vector at ``angle_from_down`` degrees from straight down, positive towards ``outward``
    (-1: image left, the subject's right side; +1: image right)."""
    a = math.radians(angle_from_down)
    return np.array([outward * math.sin(a), math.cos(a)])


# Finger layout: MCP offset across the palm (thumb side negative), length of the three phalanges
# in palm lengths, fan angle in degrees.
FINGERS = {"index": (-0.32, (0.45, 0.27, 0.2), -8), "middle": (-0.1, (0.5, 0.3, 0.21), -2),
           "ring": (0.12, (0.46, 0.28, 0.2), 4), "pinky": (0.32, (0.36, 0.22, 0.18), 10)}
# Per gesture: curl in degrees per phalanx for thumb, index, middle, ring, pinky.
GESTURES = {
    "open": (0, 0, 0, 0, 0), "relaxed": (20, 25, 30, 35, 40), "fist": (60, 100, 100, 100, 100),
    "point": (60, 0, 100, 100, 100), "peace": (60, 0, 0, 100, 100), "thumbs_up": (-20, 100, 100, 100, 100),
}


def _finger(base: np.ndarray, axis: np.ndarray, lengths, curl: float) -> list[np.ndarray]:
    """Phalanx joints seen from the back of the hand: curl foreshortens each segment by the cosine
    of the accumulated bend, folding it back past 90°."""
    pts, point, bend = [], base, 0.0
    for length in lengths:
        bend += curl
        point = point + axis * length * math.cos(math.radians(bend))
        pts.append(point)
    return pts


def _hand(wrist: np.ndarray, direction: np.ndarray, gesture: str, thumb_side: float, scale: float) -> np.ndarray:
    """21 points (wrist, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20) in pixels."""
    curls = GESTURES[gesture]
    along = direction / np.linalg.norm(direction)
    across = np.array([-along[1], along[0]]) * thumb_side
    palm = PALM * scale
    pts = [wrist]
    thumb_axis = along * math.cos(math.radians(50)) - across * math.sin(math.radians(50))
    thumb_base = wrist + (along * 0.25 - across * 0.25) * palm
    pts.append(thumb_base)
    pts.extend(_finger(thumb_base, thumb_axis * palm, (0.4, 0.32, 0.27), curls[0]))
    for (offset, lengths, fan), curl in zip(FINGERS.values(), curls[1:]):
        a = math.radians(fan * thumb_side)
        axis = along * math.cos(a) + np.array([-along[1], along[0]]) * math.sin(a)
        base = wrist + (along * 0.95 + across * offset) * palm
        pts.append(base)
        pts.extend(_finger(base, axis * palm, lengths, curl))
    return np.asarray(pts)


# name: torso (x shift, scale, lean, turn), head (yaw, pitch, roll), right arm and left arm as
# (upper angle, forearm angle, gesture[, upper length factor, forearm length factor]); angles are
# from straight down, positive away from the body; a gesture of None hides the hand (behind the
# head, turned away), "hidden" hides the wrist too (behind the back).
POSES = {
    "arms_down_relaxed": ((0, 1.0, 0, 0), (0, 0, 0), (8, 4, "relaxed"), (8, 4, "relaxed")),
    "hands_on_hips": ((0, 1.0, 0, 0), (5, 0, 3), (48, -55, "fist"), (48, -55, "fist")),
    "arms_crossed": ((0, 1.0, 0, 0), (0, 3, 0), (18, -95, "fist"), (16, -100, "fist")),
    "wave_right": ((0, 1.0, -3, 0), (-8, 0, -6), (78, 165, "open"), (10, 5, "relaxed")),
    "wave_left": ((0, 1.0, 3, 0), (8, 0, 6), (10, 5, "relaxed"), (78, 165, "open")),
    "both_hands_up": ((0, 0.92, 0, 0), (0, -5, 0), (100, 172, "open"), (100, 172, "open")),
    "hand_on_chin_right": ((0, 1.05, 0, 0), (10, 5, 8), (18, -152, "relaxed"), (10, 4, "relaxed")),
    "hand_on_chin_left": ((0, 1.05, 0, 0), (-10, 5, -8), (10, 4, "relaxed"), (18, -152, "relaxed")),
    "pointing_sideways_right": ((40, 0.95, -4, 0), (-20, 0, 0), (86, 92, "point"), (8, 5, "relaxed")),
    "pointing_sideways_left": ((-40, 0.95, 4, 0), (20, 0, 0), (8, 5, "relaxed"), (86, 92, "point")),
    "thumbs_up_right": ((0, 1.0, 0, 0), (0, 0, 4), (14, -112, "thumbs_up"), (8, 4, "relaxed")),
    "peace_sign_right": ((0, 1.0, 2, 0), (5, 0, 8), (24, -158, "peace"), (8, 4, "relaxed")),
    "hands_clasped_front": ((0, 1.0, 0, 0), (0, 4, 0), (10, -38, "relaxed"), (10, -38, "relaxed")),
    "hand_behind_head_right": ((0, 1.0, 2, 0), (8, -3, 8), (122, -128, None), (8, 4, "relaxed")),
    "hands_behind_head": ((0, 0.95, 0, 0), (0, -6, 0), (132, -118, None), (132, -118, None)),
    "shrug": ((0, 1.0, 0, 0), (0, 0, 6), (20, 62, "open"), (20, 62, "open")),
    "arms_open_welcome": ((0, 0.9, 0, 0), (0, -4, 0), (52, 62, "open"), (52, 62, "open")),
    "hands_on_chest": ((0, 1.0, 0, 0), (0, 5, 0), (10, -140, "relaxed"), (12, -132, "relaxed")),
    "looking_over_shoulder": ((0, 1.0, 4, 45), (38, 0, 4), (6, 3, "relaxed"), (6, 3, None)),
    "three_quarter_left": ((20, 1.0, 0, 30), (24, 0, 0), (8, 4, "relaxed"), (10, 6, "relaxed")),
    "three_quarter_right": ((-20, 1.0, 0, -30), (-24, 0, 0), (10, 6, "relaxed"), (8, 4, "relaxed")),
    "turned_away_left": ((30, 1.0, 2, 55), (40, 3, 0), (10, 5, "relaxed"), (5, 3, None)),
    "leaning_forward_on_arms": ((0, 1.15, 6, 0), (0, 10, 0), (8, -82, "relaxed", 0.8, 0.9),
                                (8, -82, "relaxed", 0.8, 0.9)),
    "head_tilt": ((0, 1.0, 0, 0), (0, 0, 14), (8, 4, "relaxed"), (8, 4, "relaxed")),
    "hand_on_cheek_left": ((0, 1.05, 0, 0), (-6, 0, -10), (8, 4, "relaxed"), (16, -165, "open")),
    "hand_on_hip_right": ((0, 1.0, 3, 0), (6, 0, 0), (48, -55, "fist"), (8, 5, "relaxed")),
    "hand_on_hip_left": ((0, 1.0, -3, 0), (-6, 0, 0), (8, 5, "relaxed"), (48, -55, "fist")),
    "selfie_arm_raised": ((40, 0.95, -5, 0), (-12, -6, -8), (62, 148, "open", 0.7, 0.75), (10, 5, "relaxed")),
    "arms_behind_back": ((0, 1.0, 0, 0), (0, 0, 0), (-6, 10, "hidden", 0.95, 0.4), (-6, 10, "hidden", 0.95, 0.4)),
    "fist_pump_right": ((0, 0.95, -4, 0), (-6, -8, -5), (62, 176, "fist"), (14, -20, "fist")),
    "pointing_up_left": ((0, 1.0, 4, 0), (6, -6, 4), (8, 4, "relaxed"), (22, 176, "point")),
    "adjusting_collar": ((0, 1.0, 0, 0), (0, 6, 0), (14, -156, "relaxed"), (14, -156, "relaxed")),
    "walking_casual": ((0, 1.0, 2, 10), (10, 0, 2), (-10, -6, "relaxed"), (16, 22, "relaxed")),
    "off_centre_left": ((-130, 0.9, 0, 0), (12, 0, 0), (8, 4, "relaxed"), (8, 4, "relaxed")),
    "off_centre_right": ((130, 0.9, 0, 0), (-12, 0, 0), (8, 4, "relaxed"), (8, 4, "relaxed")),
    "close_up_shoulders": ((0, 1.35, 0, 0), (0, 0, 0), (6, 3, None), (6, 3, None)),
}


def _arm(shoulder: np.ndarray, outward: float, spec, scale: float):
    upper, fore, gesture = spec[:3]
    upper_len, fore_len = (spec[3], spec[4]) if len(spec) > 3 else (1.0, 1.0)
    elbow = shoulder + _direction(upper, outward) * UPPER_ARM * upper_len * scale
    wrist = elbow + _direction(fore, outward) * FOREARM * fore_len * scale
    return elbow, wrist, gesture


def author_pose(name: str, torso, head, right_arm, left_arm) -> dict:
    shift, scale, lean, turn = torso
    yaw, pitch, roll = head
    neck = np.array([CANVAS / 2 + shift, 300.0 + NECK_BELOW_EYES * scale])
    up = -_direction(lean, 1.0)  # lean rotates the torso about the hips' line towards image right
    across = np.array([-up[1], up[0]])
    width = math.cos(math.radians(turn))
    r_shoulder = neck - across * SHOULDER_HALF_WIDTH * width * scale
    l_shoulder = neck + across * SHOULDER_HALF_WIDTH * width * scale
    pelvis = neck - up * TORSO_LENGTH * scale
    r_hip = pelvis - across * HIP_HALF_WIDTH * width * scale
    l_hip = pelvis + across * HIP_HALF_WIDTH * width * scale

    eyes_mid = neck + up * NECK_BELOW_EYES * scale + np.array([turn * 0.4 * scale, 0.0])
    rot = _rotation(yaw, pitch, roll)
    face3 = FACE_MODEL @ rot.T
    face = face3[:, :2] * EYE_DISTANCE * scale + eyes_mid
    ears3 = EAR_MODEL @ rot.T
    ears = ears3[:, :2] * EYE_DISTANCE * scale + eyes_mid
    r_eye, l_eye = face[36:42].mean(axis=0), face[42:48].mean(axis=0)
    nose = face[30]

    r_elbow, r_wrist, r_gesture = _arm(r_shoulder, -1.0, right_arm, scale)
    l_elbow, l_wrist, l_gesture = _arm(l_shoulder, 1.0, left_arm, scale)
    body = [nose, neck, r_shoulder, r_elbow, r_wrist, l_shoulder, l_elbow, l_wrist,
            r_hip, None, None, l_hip, None, None, r_eye, l_eye, ears[0], ears[1]]
    # A yaw past ~25° hides the far ear behind the head (depth below the face's back plane).
    hidden_ear = {16: yaw < -25, 17: yaw > 25}
    if r_gesture == "hidden":
        body[4] = None
    if l_gesture == "hidden":
        body[7] = None
    for i, hidden in hidden_ear.items():
        if hidden:
            body[i] = None

    def hand(wrist, elbow, gesture, thumb_outward):
        if gesture in (None, "hidden"):
            return None
        return _hand(wrist, wrist - elbow, gesture, thumb_outward, scale)

    points = {
        "body": body,
        "right_hand": hand(r_wrist, r_elbow, r_gesture, 1.0),
        "left_hand": hand(l_wrist, l_elbow, l_gesture, -1.0),
    }
    kps = np.stack([r_eye, l_eye, nose, face[48], face[54]])

    def norm(p):
        return [round(float(p[0]) / CANVAS, 5), round(float(p[1]) / CANVAS, 5)]

    def visible(p):
        return p is not None and 0.0 <= p[1] < CANVAS and -0.1 * CANVAS <= p[0] <= 1.1 * CANVAS

    return {
        "name": name,
        "canvas": [CANVAS, CANVAS],
        "body": [norm(p) + [1] if visible(p) else [0.0, 0.0, 0] for p in points["body"]],
        "left_hand": None if points["left_hand"] is None else [norm(p) for p in points["left_hand"]],
        "right_hand": None if points["right_hand"] is None else [norm(p) for p in points["right_hand"]],
        "face": [norm(p) for p in face],
        "kps": [norm(p) for p in kps],
    }


def build_library() -> dict:
    return {
        "licence": "facefoundry in-house pose data, authored by scripts/author_pose_library.py; "
                   "same licence as the facefoundry source",
        "coordinates": "normalised to the canvas (x / W, y / H); body rows are [x, y, visible]",
        "body_order": "OpenPose-18: nose, neck, R shoulder, R elbow, R wrist, L shoulder, L elbow, L wrist, "
                      "R hip, R knee, R ankle, L hip, L knee, L ankle, R eye, L eye, R ear, L ear",
        "kps_order": "InstantID: image-left eye, image-right eye, nose tip, image-left mouth corner, "
                     "image-right mouth corner",
        "poses": [author_pose(name, *spec) for name, spec in POSES.items()],
    }


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build_library(), indent=1) + "\n")
    print(f"wrote {len(POSES)} poses to {OUT}")
