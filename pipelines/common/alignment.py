"""5-point face alignment as insightface's ``face_align`` computes it (specs/faceswap.md §3.4).

Pure numpy + OpenCV: our own Umeyama similarity replaces scikit-image's deprecated
``SimilarityTransform.estimate`` and reproduces it (§3.1).
"""
from __future__ import annotations

import cv2
import numpy as np

# ArcFace 112x112 template, (x, y) of left eye, right eye, nose, left and right mouth corners as
# seen in the image (§3.4). Kept in float32 because insightface scales it in float32.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def arcface_template(size: int) -> np.ndarray:
    """The 112 template scaled to a ``size`` crop (recognition crops, sizes divisible by 112)."""
    return ARCFACE_112 * (size / 112.0)


def inswapper_template(size: int) -> np.ndarray:
    """The 128 crop inswapper was trained on: the 112 template shifted +8 px in x, scaled by size/128.

    Scaling this template is how pixel boost crops at 256/512 (§4.1).
    """
    ratio = size / 128.0
    dst = ARCFACE_112 * ratio
    dst[:, 0] += 8.0 * ratio
    return dst


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    ``src`` points onto ``dst`` points, as a 2x3 float64 matrix (Umeyama 1991).

    This is the estimate insightface gets from scikit-image (§3.1, §3.4). The centroids and the
    covariance stay in the points' own dtype (float32 for SCRFD keypoints and the template), as
    scikit-image leaves them: float64 statistics move M by ~1e-7 relative, which is enough to flip
    a few fixed-point pixels of ``cv2.warpAffine`` against insightface's crops.
    """
    src = np.asarray(src)
    dst = np.asarray(dst)
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    # A negative determinant means the best orthogonal fit is a reflection; flipping the last
    # singular direction gives the best proper rotation instead (Umeyama, eq. 39).
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = 1.0 / src_c.var(axis=0).sum() * (s @ d)
    m = np.empty((2, 3))
    m[:, :2] = scale * rotation
    m[:, 2] = dst_mean - scale * (rotation @ src_mean)
    return m


def estimate_norm(kps: np.ndarray, size: int = 112) -> np.ndarray:
    """insightface's ``estimate_norm``: the ArcFace template when ``size`` is a multiple of 112,
    else (a multiple of 128) the +8 px inswapper template (§3.4). 224 therefore uses the ArcFace
    template and 256 the inswapper one."""
    if size % 112 == 0:
        dst = arcface_template(size)
    elif size % 128 == 0:
        dst = inswapper_template(size)
    else:
        raise ValueError(f"crop size {size} is a multiple of neither 112 nor 128")
    return estimate_similarity(kps, dst)


def warp_face(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop that ``m`` maps the image into: bilinear, black border (§3.4)."""
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def norm_crop(img: np.ndarray, kps: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """insightface's ``norm_crop2``: the aligned crop and the matrix from image to crop."""
    m = estimate_norm(kps, size)
    return warp_face(img, m, size), m


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ m[:, :2].T + m[:, 2]
