"""End to end on tiny weights: photo + speech -> mp4 through SadTalkerPipeline (sadtalker.md §5).

The weights are the tiny profile's files (pipelines/sadtalker/tiny.py plus the shared restore
writers, whose RetinaFace fires once on the brightest region), loaded through the production
loaders. The mp4s are checked with ffprobe/ffmpeg.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.base import Audio, InputError, LoadOptions
from pipelines.common.face_loader import load_retinaface
from pipelines.common.retinaface import detect_faces
from pipelines.common.tiny_restore import RETINAFACE_DEST, write_tiny_restore
from pipelines.sadtalker.align import CropInfo
from pipelines.sadtalker.params import Params
from pipelines.sadtalker.paste import paste_frame
from pipelines.sadtalker.pipeline import FramePlan, SadTalkerPipeline, request_streams
from pipelines.sadtalker.tiny import write_tiny
from pipelines.sadtalker.video import crop_aspect_size, even_size, macro_block_size
from pipelines.weights.manifest import load_manifest
from server.protocol import params_for

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="ffmpeg/ffprobe not on PATH")

SR = 16000


def sadtalker_params(fields: dict) -> Params:
    """Params as the server builds them: the protocol's defaults for every field not given."""
    return params_for("sadtalker", Params, **fields)
@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("tiny_weights")
    write_tiny(dest)
    write_tiny_restore(dest)
    return dest


@pytest.fixture(scope="module")
def pipeline(weights_dir) -> SadTalkerPipeline:
    torch.manual_seed(0)
    return SadTalkerPipeline.load(LoadOptions(weights_dir=weights_dir, max_audio_seconds=5.0))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


def synthetic_speech(num_frames: int) -> np.ndarray:
    """A voiced-sounding signal: 140 Hz harmonics under a 4 Hz syllable envelope, ``num_frames`` x 40 ms."""
    t = np.arange(num_frames * SR // 25) / SR
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    return (0.2 * voice * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """espeak-ng speech resampled to 16 kHz mono by sox; a synthetic voice where they are missing."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        return synthetic_speech(12)
    folder = tmp_path_factory.mktemp("speech")
    raw, wav = folder / "raw.wav", folder / "speech16k.wav"
    subprocess.run(["espeak-ng", "-s", "220", "-w", str(raw), "Hi there"], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(SR), "-c", "1", "-b", "16", str(wav)], check=True,
                   capture_output=True)
    with wave.open(str(wav)) as f:
        assert f.getframerate() == SR and f.getnchannels() == 1
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return (pcm / 32768.0).astype(np.float32)


def probe(video: bytes, tmp_path: Path) -> dict:
    path = tmp_path / "probe.mp4"
    path.write_bytes(video)
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,codec_name,width,height,nb_read_frames,r_frame_rate,sample_rate",
                          "-of", "json", str(path)], check=True, capture_output=True, text=True)
    return {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}


def decoded_frames(video: bytes, tmp_path: Path) -> bytes:
    path = tmp_path / "decode.mp4"
    path.write_bytes(video)
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                          check=True, capture_output=True).stdout


def check_video(result, params: dict, num_frames: int, photo: np.ndarray, tmp_path: Path) -> None:
    """ffprobe: H.264 at 25 fps with N frames, AAC at 16 kHz, and the size of §5.11."""
    streams = probe(result.video, tmp_path)
    video, sound = streams["video"], streams["audio"]
    assert video["codec_name"] == "h264" and sound["codec_name"] == "aac"
    assert int(sound["sample_rate"]) == SR
    assert video["r_frame_rate"] == "25/1"
    assert int(video["nb_read_frames"]) == num_frames == result.info["frames"]
    request = sadtalker_params(params)
    assert result.info["still"] == request.still
    size = (int(video["width"]), int(video["height"]))
    assert size == (result.info["width"], result.info["height"])
    if request.preprocess in ("full", "extfull"):
        h, w = photo.shape[:2]
        assert size == (macro_block_size((2 * w, 2 * h)) if request.enhancer else even_size((w, h)))
        # The pasted frames keep the bright photo around the face: one face per frame to restore.
        assert result.info["enhanced_faces"] == (num_frames if request.enhancer else 0)
    else:
        assert size[0] == request.image_size * (2 if request.enhancer else 1)
        assert size[1] % (32 if request.enhancer else 16) == 0


# With test_same_seed_same_frames (full, enhancer, moving head) these cover every preprocess mode,
# both sizes, enhancer on/off, the pose_style and expression_scale extremes, and still both ways.
CASES = [
    pytest.param(dict(preprocess="crop", image_size=256, enhancer=False, pose_style=0, expression_scale=1.0),
                 "speech", id="crop-256-speech"),
    pytest.param(dict(preprocess="extcrop", image_size=512, enhancer=False, pose_style=45, expression_scale=3.0),
                 3, id="extcrop-512-pose45-scale3"),
    pytest.param(dict(preprocess="resize", image_size=256, enhancer=True, pose_style=45, expression_scale=3.0),
                 3, id="resize-256-enhancer"),
    pytest.param(dict(preprocess="extfull", image_size=256, enhancer=False, pose_style=0, expression_scale=1.0),
                 4, id="extfull-256-still"),
]


@pytest.mark.parametrize("params, audio", CASES)
def test_video_has_frames_size_and_audio(pipeline, photo, speech, params, audio, tmp_path):
    samples = speech if audio == "speech" else synthetic_speech(audio)
    result = pipeline(sadtalker_params(params), {"input_image": photo, "input_audio": Audio(samples, SR)}, seed=7)
    check_video(result, params, len(samples) // 640, photo, tmp_path)


def test_same_seed_same_frames(pipeline, photo, tmp_path):
    # Moving head (pose noise), paste-back and the enhancer (GFPGAN noise): every seeded consumer.
    params = dict(preprocess="full", image_size=256, enhancer=True, still=False, pose_style=45, expression_scale=3.0)
    inputs = {"input_image": photo, "input_audio": Audio(synthetic_speech(3), SR)}
    first = pipeline(sadtalker_params(params), inputs, seed=123)
    check_video(first, params, 3, photo, tmp_path)
    again = pipeline(sadtalker_params(params), inputs, seed=123)
    assert decoded_frames(first.video, tmp_path) == decoded_frames(again.video, tmp_path)


@pytest.mark.parametrize("preprocess", ["crop", "resize"])
def test_no_face_is_an_input_error(pipeline, preprocess):
    # The bright-trigger detector finds nothing on a dark picture; resize fails at the 3DMM step (§7).
    dark = np.full((192, 160, 3), 40, dtype=np.uint8)
    inputs = {"input_image": dark, "input_audio": Audio(synthetic_speech(3), SR)}
    with pytest.raises(InputError, match="No face detected in input_image"):
        pipeline(sadtalker_params(dict(preprocess=preprocess, image_size=256, enhancer=False)), inputs, seed=0)


def test_audio_too_short_or_too_long(pipeline, photo):
    params = dict(preprocess="crop", image_size=256, enhancer=False)
    with pytest.raises(InputError, match="too short"):
        pipeline(sadtalker_params(params), {"input_image": photo, "input_audio": Audio(np.zeros(1900, np.float32), SR)}, seed=0)
    with pytest.raises(InputError, match="too long"):
        pipeline(sadtalker_params(params), {"input_image": photo, "input_audio": Audio(np.zeros(6 * SR, np.float32), SR)}, seed=0)


def test_tiny_files_sit_at_manifest_paths_and_are_small(weights_dir):
    manifest = load_manifest()
    for entry in manifest.for_pipeline("sadtalker"):
        path = weights_dir / entry.dest
        assert path.is_file(), entry.dest
        assert path.stat().st_size < 5_000_000, (entry.dest, path.stat().st_size)


def test_bright_trigger_detector_loads_and_finds_one_face(weights_dir, photo):
    detector = load_retinaface(weights_dir / RETINAFACE_DEST)
    assert len(detect_faces(detector, photo, 0.97)) == 1
    assert len(detect_faces(detector, np.full((128, 128, 3), 128, np.uint8), 0.97)) == 0


def test_request_defaults_still_per_mode():
    assert sadtalker_params({"preprocess": "full"}).still
    assert sadtalker_params({"preprocess": "extfull"}).still
    assert not sadtalker_params({"preprocess": "crop"}).still
    assert not sadtalker_params({"preprocess": "full", "still": False}).still
    assert sadtalker_params({"preprocess": "resize", "still": True}).still


def test_streams_are_independent_per_consumer():
    a, b = request_streams(5), request_streams(5)
    torch.randn(100, generator=a.pose)  # a stage that draws more must not shift the others
    assert torch.equal(torch.randn(4, generator=a.enhancer), torch.randn(4, generator=b.enhancer))
    assert a.blink.integers(0, 1 << 30) == b.blink.integers(0, 1 << 30)
    assert not torch.equal(torch.randn(4, generator=request_streams(6).pose),
                           torch.randn(4, generator=request_streams(5).pose))


def test_frame_plan_sizes():
    info = CropInfo(size=(200, 230), paste_box=(10, 20, 210, 250))
    crop = sadtalker_params({"preprocess": "crop", "image_size": 256, "enhancer": False})
    assert crop_aspect_size(256, info.size) == (256, 294)
    assert FramePlan.for_request(crop, info, (400, 300, 3)).output_size == (256, 304)
    enhanced = sadtalker_params({"preprocess": "crop", "image_size": 512, "enhancer": True})
    assert FramePlan.for_request(enhanced, info, (400, 300, 3)).output_size == (1024, 2 * 592)
    full = sadtalker_params({"preprocess": "full", "enhancer": False})
    plan = FramePlan.for_request(full, info, (401, 301, 3))
    assert plan.output_size == (302, 402) and plan.paste_box == info.paste_box
    full_enhanced = sadtalker_params({"preprocess": "full", "enhancer": True})
    assert FramePlan.for_request(full_enhanced, info, (401, 301, 3)).output_size == (608, 816)


def test_paste_keeps_outside_and_matches_flat_colours():
    original = np.full((120, 100, 3), 90, np.uint8)
    frame = np.full((256, 256, 3), 90, np.uint8)
    box = (20, 30, 70, 100)
    out = paste_frame(frame, original, box)
    # A patch of the image's own colour blends to the image itself (Poisson with matching borders).
    assert np.abs(out.astype(int) - original).max() <= 1
    bright = paste_frame(np.full((256, 256, 3), 250, np.uint8), original, box)
    outside = np.ones(original.shape[:2], bool)
    outside[30:100, 20:70] = False
    assert np.array_equal(bright[outside], original[outside])
