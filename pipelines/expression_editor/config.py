"""Official LivePortrait hyperparameters, as data (spec expression-editor.md §2).

Values are KwaiVGI/LivePortrait ``src/config/models.yaml``. Two constructor details that upstream
leaves implicit are spelled out so that tiny checkpoints can shrink them through a config sidecar:
the ConvNeXt-V2 "tiny" backbone is written as its depths and dims (§2.2), and the SPADE decoder's
``out_channels`` (upstream default 64) and hidden width of every SPADE block (hard-coded 128, §2.4)
are named.
"""
from __future__ import annotations

from pipelines.common.motion_blocks import FACE_VID2VID_DENSE_MOTION

APPEARANCE_FEATURE_EXTRACTOR = {
    "image_channel": 3,
    "block_expansion": 64,
    "num_down_blocks": 2,
    "max_features": 512,
    "reshape_channel": 32,
    "reshape_depth": 16,
    "num_resblocks": 6,
}

# convnextv2_tiny (§2.2): 66 head-pose bins of 3 degrees.
MOTION_EXTRACTOR = {
    "num_kp": 21,
    "depths": [3, 3, 9, 3],
    "dims": [96, 192, 384, 768],
    "num_bins": 66,
}

WARPING_MODULE = {
    "num_kp": 21,
    "block_expansion": 64,
    "max_features": 512,
    "num_down_blocks": 2,
    "reshape_channel": 32,
    "estimate_occlusion_map": True,
    # models.yaml keeps face-vid2vid's dense-motion values, as SadTalker does (§2.3).
    "dense_motion_params": FACE_VID2VID_DENSE_MOTION,
}

SPADE_GENERATOR = {
    "upscale": 2,
    "block_expansion": 64,
    "max_features": 512,
    "num_down_blocks": 2,
    "out_channels": 64,
    "spade_hidden": 128,
}

# The three MLPs of stitching_retargeting_module; the checkpoint names them retarget_shoulder,
# retarget_mouth and retarget_eye (§2.5, §3.1).
STITCHING_RETARGETING_MODULE = {
    "stitching": {"input_size": 126, "hidden_sizes": [128, 128, 64], "output_size": 65},
    "lip": {"input_size": 65, "hidden_sizes": [128, 128, 64], "output_size": 63},
    "eye": {"input_size": 66, "hidden_sizes": [256, 256, 128, 128, 64], "output_size": 63},
}
