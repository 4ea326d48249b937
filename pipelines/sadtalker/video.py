"""Rendered frames -> the returned mp4: frame format and size rules (spec §5.7 step 3, §5.11) and one
ffmpeg encode (H.264 + AAC, 25 fps) fed raw frames through stdin (spec §5.8, §5.11).
"""
from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

FPS = 25
# Upstream's imageio writer stretches each side up to a multiple of the H.264 macro-block (§5.7 step 4).
MACRO_BLOCK = 16
FFMPEG = "ffmpeg"


def predictions_to_uint8(pred: np.ndarray) -> np.ndarray:
    """(n, 3, S, S) renderer output in [0, 1] -> (n, S, S, 3) uint8 as ``skimage.img_as_ubyte``:
    x255, then ``np.rint`` (round half to even), §5.7 step 3."""
    frames = np.rint(np.clip(pred, 0.0, 1.0) * np.float32(255.0))
    return np.ascontiguousarray(frames.transpose(0, 2, 3, 1)).astype(np.uint8)


def crop_aspect_size(image_size: int, box_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the crop video: ``(S, int(S * h / w))`` for the tight face box (w, h), §5.7 step 3."""
    w, h = box_size
    return image_size, int(image_size * h / w)


def ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def macro_block_size(size: tuple[int, int]) -> tuple[int, int]:
    """Each side rounded up to a multiple of 16, the size upstream's imageio writer produces (§5.7 step 4)."""
    return ceil_to(size[0], MACRO_BLOCK), ceil_to(size[1], MACRO_BLOCK)


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """yuv420p needs even sides: odd ones grow by one pixel (spec §11 open point 2)."""
    return ceil_to(size[0], 2), ceil_to(size[1], 2)


def resize_frame(frame: np.ndarray, size: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``frame`` at (width, height) ``size``; the identity when it already has that size."""
    if (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    return cv2.resize(frame, tuple(size), interpolation=interpolation)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV of float samples in [-1, 1]."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def encode_mp4(frames: Iterable[np.ndarray], size: tuple[int, int], samples: np.ndarray, sample_rate: int,
               num_frames: int) -> bytes:
    """H.264 (libx264, yuv420p, x264's default CRF 23 / preset medium as upstream's imageio path) at
    25 fps plus the AAC audio trimmed to ``num_frames`` x 40 ms, encoded by one ffmpeg process.

    ``frames`` are uint8 RGB arrays of exactly ``size`` = (width, height), even sides; they are
    streamed to ffmpeg's stdin as they come, so no frame is kept or written to disk.
    """
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"frame size {size} must have even sides for yuv420p")
    with tempfile.TemporaryDirectory(prefix="sadtalker_") as tmp:
        tmp = Path(tmp)
        wav, out, log = tmp / "audio.wav", tmp / "out.mp4", tmp / "ffmpeg.log"
        # §5.8: the track is the first N x 40 ms of the request's audio.
        write_wav(wav, samples[: num_frames * sample_rate // FPS], sample_rate)
        command = [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(FPS), "-i", "pipe:0",
            "-i", str(wav),
            "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-c:a", "aac",
            "-frames:v", str(num_frames),
            "-movflags", "+faststart",
            str(out),
        ]
        with log.open("wb") as err:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
            try:
                written = _feed(process, frames, size)
            except BaseException:
                process.kill()
                process.wait()
                raise
            code = process.wait()
        if code != 0 or written != num_frames:
            raise RuntimeError(f"ffmpeg failed (exit {code}, {written}/{num_frames} frames): "
                               f"{log.read_text(errors='replace')[-2000:]}")
        return out.read_bytes()


def _feed(process: subprocess.Popen, frames: Iterable[np.ndarray], size: tuple[int, int]) -> int:
    """Write the frames to ffmpeg's stdin and close it; returns how many went in before ffmpeg
    stopped reading (its exit status and log then say why)."""
    width, height = size
    written = 0
    try:
        for frame in frames:
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise ValueError(f"frame {written} is {frame.shape} {frame.dtype}, expected ({height}, {width}, 3) uint8")
            process.stdin.write(np.ascontiguousarray(frame).tobytes())
            written += 1
        process.stdin.close()
    except BrokenPipeError:
        pass
    return written
