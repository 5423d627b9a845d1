"""The speech modality against mfkit's contract, its state, its files and the embedded corpus."""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import mfkit_audio.corpus as corpus
import mfkit_audio.espeak as espeak
from mfkit.plugins import PluginContext
from mfkit.testing import check_modality_spec
from mfkit_audio.modality import SPEC, SpeechModality, SpeechParams

from audio_testutil import SMALL

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
TINY_CORPUS = {"per_class": 2, "val_per_class": 1, "accents": ["en-us"], "variants": ["m3", "f2"]}


def test_folder_modality_meets_the_contract(tone_folder, tmp_path, context):
    check_modality_spec(SPEC, tmp_path / "out", {**SMALL, "folder": str(tone_folder)}, context)


@needs_espeak
def test_digit_corpus_meets_the_contract_and_is_deterministic(tmp_path):
    first = PluginContext(purpose="test", cache_dir=tmp_path / "a")
    speech = check_modality_spec(SPEC, tmp_path / "out", {**SMALL, "digits": TINY_CORPUS}, first)
    assert speech.class_names[7] == "seven" and len(speech.dataset("train")) == 20 and len(speech.dataset("val")) == 10
    again = SpeechModality(SpeechParams(**SMALL, digits=TINY_CORPUS), PluginContext(cache_dir=tmp_path / "b"))

    def digest(cache):
        return {p.relative_to(cache).as_posix().split("/", 2)[2]: hashlib.md5(p.read_bytes()).hexdigest()
                for p in sorted(cache.rglob("*.wav"))}

    again.dataset("train")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    voices = {u.voice for u in corpus.draw_utterances(corpus.corpus_settings(50, 5, 0), "train")}
    assert len(voices) > 50  # many accent x variant combinations


def test_missing_espeak_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # no wheel either
    speech = SpeechModality(SpeechParams(**SMALL), PluginContext(cache_dir=tmp_path))
    with pytest.raises(corpus.EspeakMissing, match=r"apt-get install espeak-ng.*pip install espeakng-loader"):
        speech.dataset("train")


@pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None, reason="espeakng-loader is not installed")
def test_the_bundled_library_is_deterministic_and_speaks_digits(tmp_path):
    speaker = espeak.LibrarySpeaker()
    seven = espeak.Request("seven", "en-us+m3", 170, 50)
    first, rate = speaker.speak(seven)
    speaker.speak(espeak.Request("two", "en-gb+f2", 150, 30))
    again, _ = speaker.speak(seven)
    assert rate == 22050 and 0.3 < len(first) / rate < 1.5 and np.array_equal(first, again)


def test_state_travels_and_sampling_needs_no_data(tone_folder, context, tmp_path):
    trained = SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder)), context)
    trained.fit(trained.dataset("train"))
    state = trained.state_dict()
    assert set(state) == {"mean", "std", "log_max", "class_names"}
    moved = tmp_path / "elsewhere"
    shutil.move(str(tone_folder), moved)  # the sampling machine has no data folder
    sampler = SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder)), PluginContext(purpose="sample"))
    sampler.load_state_dict(state)
    x = torch.randn(2, *trained.sample_shape)
    assert sampler.class_names == ["high", "low"] and sampler.label_of("low") == 1
    assert all(torch.equal(a, b) for a, b in zip(sampler.decode(x), trained.decode(x)))
    with pytest.raises(ValueError, match="mel bands"):
        SpeechModality(SpeechParams(**{**SMALL, "n_mels": 8}), context).load_state_dict(state)


def test_lazy_statistics_equal_fitted_ones(tone_folder, context):
    lazy = SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder)), context)
    x, _ = lazy.dataset("train")[0]  # no fit() call: statistics computed on first use
    fitted = SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder)), context)
    fitted.fit(fitted.dataset("train"))
    assert torch.equal(fitted.dataset("train")[0][0], x)
    normalised = torch.stack([lazy.dataset("train")[i][0] for i in range(len(lazy.dataset("train")))])
    assert normalised.mean().abs() < 1e-4 and (normalised.std() - 1).abs() < 0.05


def test_save_writes_playable_wavs_and_a_png(tone_folder, context, tmp_path):
    speech = SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder), preview_wavs=1), context)
    data = speech.dataset("train")
    x = torch.stack([data[i][0] for i in range(3)])
    labels = torch.stack([data[i][1] for i in range(3)])
    files = speech.save(x, tmp_path / "s", labels, kind="samples")
    wavs = [f for f in files if f.suffix == ".wav"]
    assert len(wavs) == 3 and wavs[0].name.endswith(f"-{speech.class_names[int(labels[0])]}.wav")
    audio, rate = soundfile.read(str(wavs[0]))
    assert rate == 8000 and audio.shape == (2000,) and 0.01 < abs(audio).max() <= 0.99
    png = Image.open(tmp_path / "s" / "spectrograms.png")
    assert png.size[0] > 3 * 16 and png.getextrema()[0][1] > png.getextrema()[0][0]
    preview = speech.save(x, tmp_path / "p", labels, kind="preview", step=10)
    assert sum(f.suffix == ".wav" for f in preview) == 1


def test_render_is_the_vocoded_waveform(tone_folder, context):
    speech = SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder)), context)
    x = torch.stack([speech.dataset("train")[i][0] for i in range(2)])
    waves = speech.render(x)
    assert waves.shape == (2, 2000) and torch.equal(waves, speech.waveforms(x))


def test_encode_takes_paths_waveforms_and_log_mels(tone_folder, context):
    speech = SpeechModality(SpeechParams(**SMALL, folder=str(tone_folder), val_fraction=0.0), context)
    path = sorted((tone_folder / "low").glob("*.wav"))[0]
    from_path = speech.encode(path)
    assert from_path.shape == speech.sample_shape
    assert torch.allclose(speech.encode(speech.decode(from_path[None])[0]), from_path, atol=1e-5)
    with pytest.raises(ValueError, match="a path, a waveform or a log-mel"):
        speech.encode(torch.zeros(3, 3))
