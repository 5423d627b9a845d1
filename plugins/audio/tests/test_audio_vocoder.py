"""Griffin-Lim gives the pitch back; vocoders are chosen by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mfkit_audio.features import LogMel, MelSettings
from mfkit_audio.vocoder import GriffinLimVocoder, build_vocoder

from audio_testutil import tone


def test_griffin_lim_resynthesises_the_frequency_and_length():
    settings = MelSettings(sample_rate=8000, n_fft=256, hop=64, n_mels=40, samples=4000)
    wave = torch.from_numpy(np.pad(tone(1000.0, 8000, seconds=0.5), (0, 0)))
    out = GriffinLimVocoder(settings, n_iter=32)(LogMel(settings)(wave[None]))
    assert out.shape == (1, 4000)
    spectrum = np.abs(np.fft.rfft(out[0].numpy()))
    peak_hz = spectrum.argmax() * 8000 / 4000
    assert abs(peak_hz - 1000.0) < 60.0
    again = GriffinLimVocoder(settings, n_iter=32)(LogMel(settings)(wave[None]))
    assert torch.equal(out, again)  # deterministic


def test_unknown_vocoder_lists_the_installed_ones():
    with pytest.raises(ValueError, match="installed: griffin_lim"):
        build_vocoder("hifigan", MelSettings())
