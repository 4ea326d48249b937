"""inswapper_128: the identity swap of a 128 crop, with pixel boost (specs/faceswap.md §3.5, §4.1, §9.1).

Reproduces insightface's ``INSwapper`` pre- and post-processing. The network sees a 128x128
crop aligned to the +8 px ArcFace template and the latent ``normalize(normed_emb @ emap)``; the
emap lives in the file as an initializer no node reads, so it is applied here.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from .alignment import estimate_similarity, inswapper_template, warp_face
from .onnx_session import onnx_session

CROP_SIZE = 128
EMAP_NAME = "buff2fs"
EMAP_SHAPE = (512, 512)


def read_emap(model: onnx.ModelProto) -> np.ndarray:
    """The (512, 512) float32 emap: the initializer named ``buff2fs``, else the last (512, 512)
    initializer, else the last initializer (§1.2: fp16 re-exports append initializers after it)."""
    inits = list(model.graph.initializer)
    by_name = [i for i in inits if i.name == EMAP_NAME]
    by_shape = [i for i in inits if tuple(i.dims) == EMAP_SHAPE]
    chosen = by_name or by_shape or inits[-1:]
    if not chosen:
        raise ValueError("the swapper graph has no initializers, so no emap")
    emap = numpy_helper.to_array(chosen[-1]).astype(np.float32)
    if emap.shape != EMAP_SHAPE:
        raise ValueError(f"emap candidate {chosen[-1].name!r} has shape {emap.shape}, not {EMAP_SHAPE}")
    return emap


def swap_latent(embedding: np.ndarray, emap: np.ndarray) -> np.ndarray:
    """(1, 512) float32 ``normalize(normalize(embedding) @ emap)``, insightface's latent (§3.5 step 3).

    facefusion skips the second normalisation; the network was trained with it, so it stays.
    """
    normed = embedding / np.linalg.norm(embedding)
    latent = normed.reshape(1, -1) @ emap
    return (latent / np.linalg.norm(latent)).astype(np.float32, copy=False)


def swap_blob(crops_bgr: np.ndarray) -> np.ndarray:
    """RGB / 255 as an Nx3x128x128 float32 blob (§3.5 step 2), from N BGR uint8 crops."""
    size = crops_bgr.shape[2], crops_bgr.shape[1]
    return cv2.dnn.blobFromImages(list(crops_bgr), 1.0 / 255.0, size, (0.0, 0.0, 0.0), swapRB=True)


def prediction_to_bgr(pred: np.ndarray) -> np.ndarray:
    """Network output (N, 3, H, W) RGB in ~[0, 1] -> (N, H, W, 3) BGR uint8, clipped and truncated
    from the float32 product ``255 * pred`` as insightface does (§3.5 step 5)."""
    rgb = np.clip(255 * pred.transpose(0, 2, 3, 1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def split_polyphase(img: np.ndarray, factor: int) -> np.ndarray:
    """The factor² sub-images of an (factor·h, factor·w, C) image; tile ``a * factor + b`` holds
    pixels (i·factor + a, j·factor + b). Each tile is a whole-face view shifted by a sub-pixel
    amount, which is how pixel boost swaps a 256/512 crop with a 128 model (§4.1)."""
    h, w = img.shape[0] // factor, img.shape[1] // factor
    if h * factor != img.shape[0] or w * factor != img.shape[1]:
        raise ValueError(f"image {img.shape[:2]} is not a multiple of {factor}")
    return np.stack([img[a::factor, b::factor] for a in range(factor) for b in range(factor)])


def merge_polyphase(tiles: np.ndarray, factor: int) -> np.ndarray:
    """Re-interleave ``split_polyphase`` tiles into the full image (its exact inverse)."""
    n, h, w = tiles.shape[:3]
    if n != factor * factor:
        raise ValueError(f"{n} tiles for factor {factor}")
    out = np.empty((h * factor, w * factor) + tiles.shape[3:], dtype=tiles.dtype)
    for index, tile in enumerate(tiles):
        a, b = divmod(index, factor)
        out[a::factor, b::factor] = tile
    return out


def align_for_swap(img_bgr: np.ndarray, kps: np.ndarray, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The (size, size) target crop on the inswapper template and the image->crop matrix.

    At 128 this is insightface's ``norm_crop2(img, kps, 128)``; larger sizes (pixel boost 256/512)
    scale the same template (§4.1).
    """
    m = estimate_similarity(kps, inswapper_template(size))
    return warp_face(img_bgr, m, size), m


class INSwapper:
    """The swapper of one ONNX file. ``latent`` once per source, then ``swap_aligned`` per target."""

    crop_size = CROP_SIZE

    def __init__(self, model_file: Path | str, device: str | None = None):
        self.model_file = Path(model_file)
        self.emap = read_emap(onnx.load(str(model_file)))
        self.session = onnx_session(model_file, device)
        inputs = self.session.get_inputs()
        self.target_name, self.source_name = inputs[0].name, inputs[1].name
        self.output_name = self.session.get_outputs()[0].name
        # The original declares batch 1; re-exports with a symbolic batch take all tiles at once
        # (§3.6 "Batch", §10.3).
        self.batched = not isinstance(inputs[0].shape[0], int)

    def latent(self, embedding: np.ndarray) -> np.ndarray:
        """The (1, 512) source input for a raw w600k_r50 embedding of the source face."""
        return swap_latent(embedding, self.emap)

    def run(self, blob: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Raw predictions (N, 3, 128, 128) for a target blob of N crops and one latent."""
        def call(x):
            return self.session.run([self.output_name], {self.target_name: x, self.source_name: latent})[0]

        if self.batched or len(blob) == 1:
            return call(blob)
        return np.concatenate([call(blob[i:i + 1]) for i in range(len(blob))])

    def swap_crops(self, crops_bgr: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Swap N aligned (N, 128, 128, 3) BGR uint8 crops; returns the same layout."""
        return prediction_to_bgr(self.run(swap_blob(crops_bgr), latent))

    def swap_aligned(self, crop_bgr: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Swap one aligned (128·k, 128·k, 3) BGR uint8 crop: k = 1 is plain inswapper, k = 2 / 4
        pixel boost 256 / 512, where the k² polyphase tiles go through the model in one batch."""
        factor = crop_bgr.shape[0] // self.crop_size
        if factor < 1 or crop_bgr.shape[:2] != (factor * self.crop_size,) * 2:
            raise ValueError(f"crop {crop_bgr.shape[:2]} is not a square multiple of {self.crop_size}")
        tiles = split_polyphase(crop_bgr, factor)
        return merge_polyphase(self.swap_crops(tiles, latent), factor)
