"""The speech-folder adapter: layouts, labels, splits, resampling, bad files and the spectrogram cache."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile
import torch

import mfkit_audio.spectra as spectra
from mfkit_audio.folder import SpeechFolderError, scan
from mfkit_audio.modality import SpeechModality, SpeechParams
from mfkit_audio.spectra import AudioDataWarning

from audio_testutil import SMALL, tone


def modality(context, **params) -> SpeechModality:
    return SpeechModality(SpeechParams(**{**SMALL, **params}), context)


def test_labels_from_subfolders_with_a_stable_held_out_split(tone_folder, context):
    train, val = scan(tone_folder, "train", "folder", val_fraction=0.25), scan(tone_folder, "val", "folder", val_fraction=0.25)
    assert len(train) + len(val) == 24 and val and not {f.relative for f in train} & {f.relative for f in val}
    assert all("_background_noise_" not in f.relative for f in train + val)
    speech = modality(context, folder=str(tone_folder), val_fraction=0.25)
    assert speech.class_names == ["high", "low"]
    x, label = speech.dataset("train")[0]
    assert x.shape == speech.sample_shape == (1, 16, 1 + 2000 // 64) and label.dtype == torch.long


def test_every_format_and_rate_lands_in_the_right_mel_band(tone_folder, context):
    speech = modality(context, folder=str(tone_folder), val_fraction=0.0)
    found = speech.spectrograms("train")
    loudest = found.log_mel.mean(dim=2).argmax(dim=1)
    by_label = {label: set(loudest[[i for i, l in enumerate(found.labels) if l == label]].tolist())
                for label in ("low", "high")}
    assert max(by_label["low"]) < min(by_label["high"])  # 300 Hz tones below 2 kHz tones, whatever the rate


def test_filename_labels_manifests_and_split_folders(tmp_path, context):
    flat = tmp_path / "sc09"
    (flat / "train").mkdir(parents=True)
    (flat / "valid").mkdir()
    for split, count in (("train", 3), ("valid", 1)):
        for word, freq in (("Seven", 500.0), ("Two", 1500.0)):
            for i in range(count):
                soundfile.write(str(flat / split / f"{word}_{i:04x}_nohash_0.wav"), tone(freq, 8000), 8000)
    assert {f.label for f in scan(flat, "val", "filename")} == {"seven", "two"}
    assert len(scan(flat, "train", "filename")) == 6
    manifest = tmp_path / "list.tsv"
    manifest.write_text("path\tlabel\n" + "".join(f"train/{p.name}\t{p.name[:3]}\n" for p in (flat / "train").iterdir()))
    listed = scan(flat, "train", "manifest", manifest, val_fraction=0.0)
    assert len(listed) == 6 and {f.label for f in listed} == {"Sev", "Two"}
    speech = modality(context, folder=str(flat), label_from="filename")
    assert speech.class_names == ["two", "seven"]  # digit words in counting order


def test_corrupt_and_silent_files_are_skipped_with_one_warning_naming_each(tone_folder, context):
    (tone_folder / "low" / "broken.wav").write_bytes(b"RIFF not really audio")
    soundfile.write(str(tone_folder / "low" / "quiet.flac"), np.zeros(1600, np.float32), 8000)
    with pytest.warns(AudioDataWarning, match=r"skipped 2 .*broken\.wav.*quiet\.flac") as caught:
        modality(context, folder=str(tone_folder), val_fraction=0.0).dataset("train")
    assert len(caught) == 1


@pytest.mark.parametrize("case", ["missing", "empty", "silent", "flat"])
def test_unusable_folders_are_one_clear_error(tmp_path, context, case):
    root = tmp_path / "speech"
    if case != "missing":
        (root / "a").mkdir(parents=True)
    if case == "silent":
        for i in range(3):
            soundfile.write(str(root / "a" / f"{i}.wav"), np.zeros(800, np.float32), 8000)
    if case == "flat":
        soundfile.write(str(root / "x.wav"), tone(440, 8000), 8000)
    message = {"missing": "does not exist", "empty": "no .wav/.flac/.ogg files", "silent": "no usable audio",
               "flat": "lies directly in the speech folder"}[case]
    with pytest.raises(SpeechFolderError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioDataWarning)  # the silent files are also named in a warning
        modality(context, folder=str(root), val_fraction=0.0).dataset("train")


def test_the_second_run_decodes_no_audio(tone_folder, context, monkeypatch):
    modality(context, folder=str(tone_folder)).dataset("train")

    def no_decoding(*args, **kwargs):
        raise AssertionError("audio was decoded although the spectrograms are cached")

    monkeypatch.setattr(spectra, "read_mono", no_decoding)
    again = modality(context, folder=str(tone_folder)).dataset("train")
    assert len(again) > 0
    soundfile.write(str(tone_folder / "low" / "new.wav"), tone(350, 8000), 8000)  # a changed folder is decoded
    with pytest.raises(AssertionError, match="audio was decoded"):
        modality(context, folder=str(tone_folder), val_fraction=0.0).dataset("train")


def test_filename_labels_use_the_stem_lower_cased(tmp_path):
    for name in ("seven_a.wav", "Seven.wav", "seven.flac", "Two.ogg"):
        soundfile.write(str(tmp_path / name), tone(440, 8000), 8000)
    labels = {f.relative: f.label for f in scan(tmp_path, "train", "filename", val_fraction=0.0)}
    assert labels == {"seven_a.wav": "seven", "Seven.wav": "seven", "seven.flac": "seven", "Two.ogg": "two"}


def test_a_manifest_without_a_label_column_is_one_clear_error(tmp_path):
    soundfile.write(str(tmp_path / "a.wav"), tone(440, 8000), 8000)
    (tmp_path / "meta.csv").write_text("path,transcript\na.wav,hello\n")
    with pytest.raises(SpeechFolderError, match=r"meta\.csv has no label column \(its header has path, transcript\); "
                                                r".*naming the label column one of label, class"):
        scan(tmp_path, "train", "manifest", tmp_path / "meta.csv", val_fraction=0.0)
    (tmp_path / "bare.csv").write_text("a.wav\n")  # no header, one column: was silently unlabelled
    with pytest.raises(SpeechFolderError, match=r"bare\.csv has no label column \(its lines have one column\)"):
        scan(tmp_path, "train", "manifest", tmp_path / "bare.csv", val_fraction=0.0)
    (tmp_path / "gap.csv").write_text("a.wav,seven\na.wav,\n")  # no header: line numbers count from 1
    with pytest.raises(SpeechFolderError, match=r"gap\.csv, line 2: expected a path and a label"):
        scan(tmp_path, "train", "manifest", tmp_path / "gap.csv", val_fraction=0.0)
