"""The Wav2Lip audio front-end (spec §5.2) against the ``audio_frontend`` fixture, and the
seeded blink schedule (§5.2 step 4, §7)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.base import InputError
from pipelines.sadtalker.audio import (audio_features, crop_or_pad, frame_count, hz_to_mel_slaney,
                                       mel_filterbank, mel_to_hz_slaney, mel_window_starts, melspectrogram)
from pipelines.sadtalker.coefficients import blink_schedule
from pipelines.sadtalker.config import AUDIO, BLINK_SHAPE
from tests.parity.fixtures import assert_close, load_npz, params


@pytest.mark.parametrize("fixture", params("sadtalker", "audio_frontend"))
def test_audio_frontend_parity(fixture):
    data = load_npz(fixture)
    wav = data["wav_16k"]
    n = frame_count(len(wav))
    assert n == int(data["num_frames"])
    cropped = crop_or_pad(wav, n)
    np.testing.assert_array_equal(cropped, data["wav_cropped"])
    assert_close(melspectrogram(cropped).T, data["mel"], "mel")
    mels, n_frames = audio_features(wav)
    assert n_frames == n and mels.dtype == np.float32
    assert_close(mels, data["indiv_mels"], "indiv_mels")


def test_window_starts_truncate_toward_zero():
    # int(80 * (i - 2) / 25): -6 and -3 for the first two frames, then 0, 3, 6, 9, 12, 16 (§5.2 step 3).
    np.testing.assert_array_equal(mel_window_starts(8), [-6, -3, 0, 3, 6, 9, 12, 16])


def test_short_audio_is_padded_to_whole_frames():
    wav = np.ones(3 * 640 + 100, dtype=np.float32)
    assert frame_count(len(wav)) == 3
    np.testing.assert_array_equal(crop_or_pad(wav[:1000], 3), np.r_[wav[:1000], np.zeros(920, np.float32)])
    mels, n = audio_features(wav)
    assert mels.shape == (3, AUDIO["num_mels"], AUDIO["mel_window"]) and n == 3
    assert np.isfinite(mels).all() and mels.min() >= -4 and mels.max() <= 4


def test_audio_under_three_frames_is_refused():
    # Savitzky-Golay needs N >= 3; upstream crashes, ours is a 400 (§7).
    with pytest.raises(InputError, match="too short"):
        audio_features(np.zeros(3 * 640 - 1, dtype=np.float32))


def test_slaney_mel_scale():
    hz = np.array([0.0, 55.0, 500.0, 1000.0, 4000.0, 7600.0])
    np.testing.assert_allclose(mel_to_hz_slaney(hz_to_mel_slaney(hz)), hz, rtol=1e-12)
    assert hz_to_mel_slaney(1000.0) == pytest.approx(15.0)  # the linear/log break of Slaney's scale
    assert hz_to_mel_slaney(500.0) == pytest.approx(7.5)


def test_mel_filterbank_shape_and_area_norm():
    basis = mel_filterbank(16000, 800, 80, 55.0, 7600.0)
    assert basis.shape == (80, 401) and basis.dtype == np.float32
    assert (basis >= 0).all()
    freqs = np.fft.rfftfreq(800, 1 / 16000)
    assert not basis[:, (freqs < 55) | (freqs > 7600)].any()
    # Slaney norm: every triangle (peak 2 / width) has unit area in Hz, up to the bin sampling.
    area = basis.sum(axis=1) * (freqs[1] - freqs[0])
    np.testing.assert_allclose(area[10:], 1.0, rtol=0.05)


@pytest.mark.parametrize("n", [0, 1, 5, 20, 21])
def test_no_blinks_for_short_clips(n):
    # N <= 20 upstream; N = 21 crashes upstream on an empty range and means no blinks here (§7).
    ratio = blink_schedule(n, np.random.default_rng(0))
    assert ratio.shape == (n,) and not ratio.any()


def test_blinks_are_reproducible_from_the_generator():
    a = blink_schedule(300, np.random.default_rng(7))
    b = blink_schedule(300, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.any()
    assert not np.array_equal(a, blink_schedule(300, np.random.default_rng(8)))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(22, 400), seed=st.integers(0, 2**32 - 1))
def test_blink_schedule_shape(n, seed):
    ratio = blink_schedule(n, np.random.default_rng(seed))
    assert ratio.dtype == np.float32
    onsets = [i for i in range(n) if ratio[i] > 0 and (i == 0 or ratio[i - 1] == 0)]
    low, high = min(10, n), min(n // 2, 70)
    previous_end = 0
    for start in onsets:
        np.testing.assert_array_equal(ratio[start:start + 5], np.float32(BLINK_SHAPE))
        assert low <= start - previous_end < high
        assert start + 5 <= n - 1
        previous_end = start + 5
    # The schedule stops only when the next gap could not fit a blink.
    assert ratio[previous_end:].sum() == 0
