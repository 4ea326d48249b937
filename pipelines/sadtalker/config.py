"""Official hyperparameters of SadTalker's audio and coefficient side, as data.

Constructor arguments are plain JSON-able dicts so that ``config_for`` can swap in a tiny
checkpoint's sidecar (pipelines/common/checkpoint.py). The renderer's networks live in
``render_config.py``.
"""
from __future__ import annotations

# Wav2Lip audio front-end (spec §5.2; upstream src/utils/hparams.py).
AUDIO = {
    "sample_rate": 16000,
    "fps": 25,
    "n_fft": 800,  # also the Hann window length (hparams win_size)
    "hop_size": 200,
    "num_mels": 80,
    "fmin": 55.0,
    "fmax": 7600.0,
    "preemphasis": 0.97,
    "min_level_db": -100.0,
    "ref_level_db": 20.0,
    "max_abs_value": 4.0,
    # 16 mel frames (~200 ms) per video frame, starting two video frames early (spec §5.2 step 3).
    "mel_window": 16,
    "mel_window_lead_frames": 2,
}

# Wav2Lip audio encoder widths: 32 (+2 res), 64 (+2 res), 128 (+2 res), 256 (+1 res), 512, 512 (spec §3.3).
AUDIO_ENCODER_CHANNELS = [32, 64, 128, 256, 512]

# ExpNet, SimpleWrapperV2() (spec §3.3): mapping1 = Linear(512 + 64 + 1 -> 64).
AUDIO2EXP = {"audio_channels": AUDIO_ENCODER_CHANNELS, "exp_dim": 64}

# PoseVAE, Audio2Pose(cfg) with src/config/auido2pose.yaml (spec §3.4). The encoder sizes are the
# yaml's [192, 128]; upstream adds latent + seq_len * audio_out + 6 to the first entry itself.
AUDIO2POSE = {
    "audio_channels": AUDIO_ENCODER_CHANNELS,
    "seq_len": 32,
    "latent_size": 64,
    "audio_emb_out_size": 6,
    "num_classes": 46,
    "pose_dim": 6,
    "decoder_layer_sizes": [128, 192],
    "encoder_layer_sizes": [192, 128],
    "resunet_filters": [32, 64, 128, 256],
    "discriminator_channels": [256, 512, 1024],
}

# Deep3DFaceRecon ReconNetWrapper('resnet50', use_last_fc=False) (spec §3.2): torchvision ResNet-50,
# seven 1x1 heads id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | txy 2 | tz 1 = 257.
NET_RECON = {"layers": [3, 4, 6, 3], "width": 64, "head_dims": [80, 64, 80, 3, 27, 2, 1]}

# MappingNet (spec §3.5): 70-d for crop/extcrop/resize, 73-d (with s, tx, ty) for full/extfull.
MAPPING_CROP = {"coeff_nc": 70, "descriptor_nc": 1024, "layer": 3, "num_kp": 15, "num_bins": 66}
MAPPING_FULL = {**MAPPING_CROP, "coeff_nc": 73}

# Where each network sits in the official files (spec §4.2, shared/parity/README.md §6).
BUNDLE_FILES = {256: "SadTalker_V0.0.2_256.safetensors", 512: "SadTalker_V0.0.2_512.safetensors"}
AUDIO2EXP_PREFIX = "audio2exp."
AUDIO2POSE_PREFIX = "audio2pose."
NET_RECON_PREFIX = "face_3drecon."
MAPPING_CROP_FILE = "mapping_00229-model.pth.tar"
MAPPING_FULL_FILE = "mapping_00109-model.pth.tar"
MAPPING_KEY = "mapping"

# Coefficient layouts: net_recon's 257 outputs (spec §3.2) and SadTalker's 73-d coeff_3dmm (§5.4).
RECON_EXP = slice(80, 144)
RECON_ANGLE = slice(224, 227)
RECON_TRANS = slice(254, 257)
COEFF_EXP = slice(0, 64)
COEFF_POSE = slice(64, 70)
COEFF_CROP = slice(70, 73)

# Glue (spec §3.4, §5.2 step 4, §5.6): Savitzky-Golay on pose, blink shape, MappingNet window radius.
SAVGOL_WINDOW = 13
SAVGOL_ORDER = 2
BLINK_SHAPE = [0.5, 0.9, 1.0, 0.9, 0.5]
BLINK_MIN_FRAMES = 21
BLINK_GAP_MIN = 10
BLINK_GAP_MAX = 70
SEMANTIC_RADIUS = 13
