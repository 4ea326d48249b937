"""Official face-renderer hyperparameters (SadTalker ``src/config/facerender.yaml``), as data.

``common_params`` are merged into each network's own parameters, as upstream's
``animate.py`` does, so each dict below is the exact constructor kwargs (spec §3.6, §3.7, §3.9;
they equal the ``kwargs`` of the parity configs).
"""
from __future__ import annotations

from ..common.motion_blocks import FACE_VID2VID_DENSE_MOTION

COMMON = {
    "num_kp": 15,
    "image_channel": 3,
    "feature_channel": 32,
    "estimate_jacobian": False,
}

KP_DETECTOR = {
    **COMMON,
    "temperature": 0.1,
    "block_expansion": 32,
    "max_features": 1024,
    "scale_factor": 0.25,
    "num_blocks": 5,
    "reshape_channel": 16384,  # 1024 channels x depth 16
    "reshape_depth": 16,
}

GENERATOR = {
    **COMMON,
    "block_expansion": 64,
    "max_features": 512,
    "num_down_blocks": 2,
    "reshape_channel": 32,
    "reshape_depth": 16,  # 512 channels = 32 x depth 16
    "num_resblocks": 6,
    "estimate_occlusion_map": True,
    # facerender.yaml keeps face-vid2vid's dense-motion values, as LivePortrait does.
    "dense_motion_params": FACE_VID2VID_DENSE_MOTION,
}

# Where each network sits in SadTalker_V0.0.2_{256,512}.safetensors (spec §4.2). A tiny bundle's
# sidecar ``<bundle>.config.json`` holds one config per prefix under these same keys.
KP_DETECTOR_PREFIX = "kp_extractor."
GENERATOR_PREFIX = "generator."
OFFICIAL_BY_PREFIX = {KP_DETECTOR_PREFIX: KP_DETECTOR, GENERATOR_PREFIX: GENERATOR}

# Head-pose logits are 66 bins of 3 degrees starting at -99 (spec §3.8).
POSE_BINS = 66
POSE_BIN_DEGREES = 3.0
POSE_OFFSET_DEGREES = 99.0
# Upstream converts degrees to radians with 3.14, not pi (spec §3.8, §10.4).
UPSTREAM_PI = 3.14
