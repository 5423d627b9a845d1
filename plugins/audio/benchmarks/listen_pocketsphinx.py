"""An independent listener for spoken-digit WAVs: PocketSphinx (its bundled US-English acoustic model,
no download) with a grammar of the ten digit words. It shares nothing with mfkit-audio's evaluator.

    python3 -m venv /tmp/psvenv && /tmp/psvenv/bin/pip install pocketsphinx soundfile numpy   # apart from mfkit
    mfkit sample --run runs/audio_speech --steps 1 --n 10 --cond seven --out /tmp/listen/seven  # ... each digit
    /tmp/psvenv/bin/python plugins/audio/benchmarks/listen_pocketsphinx.py /tmp/listen

Files are named ``<anything>-<digit word>.wav`` (as `mfkit sample` names them), directly in the folder
or one level below. Each is resampled to 16 kHz with sox (padded with 0.2 s of silence) and decoded;
the script prints the share recognised as the digit asked for and the confusions.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import soundfile
from pocketsphinx import Decoder, get_model_path

WORDS = "zero one two three four five six seven eight nine".split()


def decoder() -> Decoder:
    grammar = Path(tempfile.mkdtemp()) / "digits.gram"
    grammar.write_text("#JSGF V1.0;\ngrammar digits;\npublic <digit> = " + " | ".join(WORDS) + " ;\n")
    model = Path(get_model_path()) / "en-us"
    return Decoder(hmm=str(model / "en-us"), dict=str(model / "cmudict-en-us.dict"), jsgf=str(grammar),
                   logfn=os.devnull)


def recognise(listener: Decoder, path: Path) -> str:
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "16k.wav"
        subprocess.run(["sox", str(path), "-r", "16000", "-b", "16", "-c", "1", str(wav), "pad", "0.2", "0.2"],
                       check=True, capture_output=True)
        audio, _ = soundfile.read(str(wav), dtype="int16")
    listener.start_utt()
    listener.process_raw(audio.tobytes(), full_utt=True)
    listener.end_utt()
    hypothesis = listener.hyp()
    return hypothesis.hypstr.strip() if hypothesis else ""


def main() -> None:
    folder = Path(sys.argv[1])
    listener, confusions, hits, total = decoder(), collections.Counter(), 0, 0
    for path in sorted([*folder.glob("*.wav"), *folder.glob("*/*.wav")]):
        wanted = path.stem.rsplit("-", 1)[-1]
        if wanted not in WORDS:
            continue
        heard = recognise(listener, path)
        total, hits = total + 1, hits + (heard == wanted)
        confusions[(wanted, heard or "(nothing)")] += heard != wanted
    print(f"{folder}: {hits} of {total} recognised as the digit asked for ({hits / max(total, 1):.0%})")
    print("confusions:", {f"{w} -> {h}": n for (w, h), n in sorted(confusions.items()) if n})


if __name__ == "__main__":
    main()
