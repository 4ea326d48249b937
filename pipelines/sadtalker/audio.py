"""Wav2Lip audio front-end: 16 kHz mono samples -> one 80x16 mel window per 25 fps video frame.

Follows spec §5.2 (upstream src/generate_batch.py ``get_data`` and src/utils/audio.py with
src/utils/hparams.py) in numpy/scipy; librosa's STFT and Slaney mel filterbank are reproduced
here, in the same float precisions, so the numbers match the ``audio_frontend`` fixture.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

from ..base import InputError
from .config import AUDIO, SAVGOL_ORDER


def samples_per_frame(hp: dict = AUDIO) -> int:
    return hp["sample_rate"] // hp["fps"]


def frame_count(num_samples: int, hp: dict = AUDIO) -> int:
    """Video frames covered by the audio: ``int(len / 640)`` at 16 kHz and 25 fps (§5.2 step 1)."""
    return int(num_samples / (hp["sample_rate"] / hp["fps"]))


def crop_or_pad(wav: np.ndarray, num_frames: int, hp: dict = AUDIO) -> np.ndarray:
    """The first ``num_frames`` frames' worth of samples, zero-padded if the audio is shorter."""
    length = num_frames * samples_per_frame(hp)
    if len(wav) >= length:
        return wav[:length]
    return np.pad(wav, (0, length - len(wav)))


def preemphasize(wav: np.ndarray, k: float) -> np.ndarray:
    # scipy promotes to float64 here, as upstream's lfilter([1, -k], [1], wav) does.
    return signal.lfilter([1, -k], [1], wav)


def stft_magnitude(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| as ``librosa.stft(center=True, pad_mode='constant')`` with a periodic Hann window of
    n_fft samples (Wav2Lip's win_size equals n_fft): (1 + n_fft/2, 1 + len/hop), float64."""
    window = signal.get_window("hann", n_fft, fftbins=True)
    # center=True with zero padding (librosa >= 0.9; spec §10.2) centres frame t on sample t*hop.
    padded = np.pad(y, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * window, axis=-1)).T


# Slaney's mel scale (librosa htk=False): linear below 1 kHz at 200/3 Hz per mel, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` (Slaney scale and area norm), float32.

    librosa stores each triangle in a float32 array and then scales it by the float64 Slaney
    norm in place; both roundings are kept so the filters are bit-identical.
    """
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = mel_to_hz_slaney(
        np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / widths[i]
        upper = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    norm = 2.0 / (edges[2:n_mels + 2] - edges[:n_mels])
    weights *= norm[:, np.newaxis]
    return weights


def amplitude_to_db(x: np.ndarray, min_level_db: float) -> np.ndarray:
    min_level = np.exp(min_level_db / 20 * np.log(10))
    return 20 * np.log10(np.maximum(min_level, x))


def normalize_db(s: np.ndarray, min_level_db: float, max_abs: float) -> np.ndarray:
    """Symmetric normalisation with clipping: -100..0 dB -> [-4, 4] (Wav2Lip ``_normalize``)."""
    return np.clip((2 * max_abs) * ((s - min_level_db) / (-min_level_db)) - max_abs, -max_abs, max_abs)


def melspectrogram(wav: np.ndarray, hp: dict = AUDIO) -> np.ndarray:
    """Normalised log-mel spectrogram (num_mels, 1 + len/hop) in [-4, 4], float64 (§5.2 step 2)."""
    spec = stft_magnitude(preemphasize(wav, hp["preemphasis"]), hp["n_fft"], hp["hop_size"])
    basis = mel_filterbank(hp["sample_rate"], hp["n_fft"], hp["num_mels"], hp["fmin"], hp["fmax"])
    db = amplitude_to_db(np.dot(basis, spec), hp["min_level_db"]) - hp["ref_level_db"]
    return normalize_db(db, hp["min_level_db"], hp["max_abs_value"])


def mel_window_starts(num_frames: int, hp: dict = AUDIO) -> np.ndarray:
    """First mel row of each video frame's window: ``int(80 * ((i - 2) / 25))``, truncated toward 0."""
    mel_fps = hp["sample_rate"] / hp["hop_size"]
    offsets = (np.arange(num_frames) - hp["mel_window_lead_frames"]) / float(hp["fps"])
    return np.trunc(mel_fps * offsets).astype(np.int64)


def mel_windows(mel_rows: np.ndarray, num_frames: int, hp: dict = AUDIO) -> np.ndarray:
    """(num_frames, num_mels, 16): per video frame the 16 mel rows from its start, clamped (§5.2 step 3)."""
    starts = mel_window_starts(num_frames, hp)
    rows = np.clip(starts[:, None] + np.arange(hp["mel_window"])[None, :], 0, len(mel_rows) - 1)
    return mel_rows[rows].transpose(0, 2, 1)


def audio_features(wav_16k: np.ndarray, hp: dict = AUDIO) -> tuple[np.ndarray, int]:
    """Mono 16 kHz float samples -> (indiv_mels (N, 80, 16) float32, N video frames).

    Fewer than 3 frames (0.12 s) is refused: pose smoothing needs a window above its
    polynomial order, where upstream crashes (spec §7).
    """
    wav_16k = np.asarray(wav_16k, dtype=np.float32)
    if wav_16k.ndim != 1:
        raise ValueError(f"expected mono samples, got shape {wav_16k.shape}")
    num_frames = frame_count(len(wav_16k), hp)
    if num_frames <= SAVGOL_ORDER:
        raise InputError(f"input_audio is too short (minimum {(SAVGOL_ORDER + 1) / hp['fps']:.2f} s)")
    mel_rows = melspectrogram(crop_or_pad(wav_16k, num_frames, hp), hp).T
    return mel_windows(mel_rows, num_frames, hp).astype(np.float32), num_frames
