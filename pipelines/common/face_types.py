"""A detected face, and the interfaces of the face tools (specs/faceswap.md §6.1).

Every component of the face pipelines sits behind one of these protocols so that a licence-clean
substitute (YuNet for SCRFD, an Apache-2.0 swapper for inswapper) can replace the InsightFace
default without touching the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


@dataclass
class Face:
    """One face in image pixel coordinates.

    ``kps`` are the 5 SCRFD points in image order: left eye, right eye, nose tip, left mouth
    corner, right mouth corner as seen in the image (§3.3), so index 0 is the subject's right eye.
    """

    bbox: np.ndarray  # (4,) float32 [x1, y1, x2, y2]
    kps: np.ndarray  # (5, 2) float32
    det_score: float
    embedding: np.ndarray | None = None  # (512,) float32, raw recogniser output

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.bbox)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    @property
    def normed_embedding(self) -> np.ndarray:
        """``embedding / ‖embedding‖`` in float32, as insightface's ``Face.normed_embedding`` (§3.4)."""
        if self.embedding is None:
            raise ValueError("this face has no embedding yet")
        return self.embedding / np.linalg.norm(self.embedding)


def faces_by_size(faces: Sequence[Face]) -> list[Face]:
    """Faces ordered big to small by box area: the order ``*_face_index`` parameters count in (§6.2)."""
    return sorted(faces, key=lambda f: f.area, reverse=True)


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The face with the largest box, which the swap uses for source and target (§6.2); None if none."""
    ordered = faces_by_size(faces)
    return ordered[0] if ordered else None


class FaceDetector(Protocol):
    def detect_faces(self, img_bgr: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, highest detection score first."""


class FaceRecognizer(Protocol):
    def embed(self, img_bgr: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """The raw (512,) embedding of the face with keypoints ``kps``."""


class FaceSwapper(Protocol):
    crop_size: int

    def latent(self, embedding: np.ndarray) -> np.ndarray:
        """The swapper's source input computed from a recogniser embedding."""

    def swap_crops(self, crops_bgr: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Swap a batch of aligned (N, crop_size, crop_size, 3) BGR uint8 crops to the latent's identity."""
