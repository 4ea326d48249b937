"""The fofr consistent-character workflow's fixed settings (sticker-and-character.md §3.2, §3.3)."""
from __future__ import annotations

# predict.py's negative (node 10): ComfyUI-weighted and longer than 77 tokens (§3.2, §4.5 item 5).
NEGATIVE_TEMPLATE = (
    "(nsfw:2), nipple, nude, naked, {negative_prompt}, lowres, two people, child, bad anatomy, bad hands, text, "
    "error, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality, normal quality, "
    "jpeg artifacts, signature, watermark, username, blurry, multiple view, reference sheet, mutated, poorly drawn, "
    "mutation, deformed, ugly, bad proportions, gross proportions, malformed limbs, missing arms, missing legs, "
    "extra arms, extra legs, fused fingers, too many fingers, long neck, amateur drawing, odd eyes, uneven eyes, "
    "unnatural face, uneven nostrils, crooked mouth, bad teeth, crooked teeth, gross, ugly, very long body, "
    "duplicate, morbid, mutilated, extra fingers, mutated hands, poorly drawn eyes"
)

# ApplyInstantID (2): weight 0.8 for both the IP attention and the IdentityNet (§3.3 step 3).
INSTANTID_WEIGHT = 0.8
# ControlNetApply (74): OpenPose XL at 0.9 on the positive only (§3.3 step 4).
OPENPOSE_STRENGTH = 0.9
# IPAdapterAdvanced (52), "style transfer" on SDXL: weight 1.0 at up_blocks.0.attentions.1 only (§3.5).
STYLE_TRANSFER_ATTENTION = 1

# KSampler (11): 4 steps, cfg 1.3, dpmpp_sde karras, denoise 0.95 = a full 4-step schedule (§3.3 step 6).
STEPS = 4
GUIDANCE = 1.3
# ImageScaleBy (103): Lanczos ×1.5; KSampler (105): refine at cfg 1, denoise 0.2 (§3.3 steps 9, 11).
UPSCALE = 1.5
REFINE_DENOISE = 0.2
DETAIL_CFG = 1.0

# FaceDetailer (98, 115) with bbox/Eyes.pt (§3.3 step 8).
EYES_THRESHOLD = 0.5
EYES_DILATION = 10
EYES_CROP_FACTOR = 3.0
EYES_DROP_SIZE = 10
EYES_GUIDE_SIZE = 384
EYES_MAX_SIZE = 1024
EYES_DENOISE = 0.35
EYES_FEATHER = 5
# Decision (§0 "Decisions"): the second detailer uses these, not the original's swapped pair.
EYES_POSITIVE = "perfect eyes"
EYES_NEGATIVE = "deformed pupils, deformed eyes, ugly eyes"

# Image Filter Adjustments (109, 111): sharpness 1.1, edge_enhance 0.1, detail_enhance (§3.3 step 10).
SHARPNESS = 1.1
EDGE_ENHANCE_BLEND = 0.1


def negative_prompt(negative: str) -> str:
    return NEGATIVE_TEMPLATE.format(negative_prompt=negative)


def pose_seed(seed: int, pose_index: int) -> int:
    """Pose i draws from seed + i (decision: the original reuses one seed for every pose)."""
    return seed + pose_index


def style_transfer_scale(attentions_in_up_block_0: int) -> dict:
    """diffusers' per-block IP-Adapter scale of "style transfer": SDXL's [0, 1, 0] in ``up.block_0``."""
    return {"up": {"block_0": [float(i == STYLE_TRANSFER_ATTENTION) for i in range(attentions_in_up_block_0)]}}
