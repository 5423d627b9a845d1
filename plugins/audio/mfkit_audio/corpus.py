"""The embedded spoken-digit corpus: "zero" to "nine" spoken by eSpeak NG in many voices.

Each utterance draws an accent (an English eSpeak NG voice), a voice variant (male, female, Klatt
formant voices, ...), a speed (words per minute) and a pitch from a generator seeded with ``seed``, so a
seed always gives the same corpus (for one eSpeak NG version). The corpus is written once as a speech
folder ``<cache>/audio/espeak-digits-<hash>/{train,val}/<digit>/<n>.wav`` and then read like any user's
folder. The held-out split ("val") gets its own draws. eSpeak NG runs as the system program or, where
that is missing, as the library of the ``espeakng-loader`` wheel (:mod:`mfkit_audio.espeak`).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import soundfile
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mfkit_audio.espeak import EspeakMissing, Request, find_speaker  # noqa: F401 - EspeakMissing re-exported

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "iven", "john", "max", "Annie", "Andy", "edward", "linda", "paul", "steph")


@dataclass(frozen=True)
class CorpusSettings:
    """Which utterances make the corpus: per digit, ``per_class`` for training and ``val_per_class``
    held out; accents, variants, speed range (words per minute) and pitch range (0-99)."""

    per_class: int = 200
    val_per_class: int = 30
    seed: int = 0
    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    speed: tuple[int, int] = (130, 220)
    pitch: tuple[int, int] = (25, 75)


def draw_utterances(settings: CorpusSettings, split: str) -> list[Request]:
    """The utterances of ``split`` in a fixed order: digit by digit, each with its seeded draws."""
    count = settings.per_class if split == "train" else settings.val_per_class
    rng = random.Random(f"{settings.seed}-{split}")
    items = []
    for word in DIGITS:
        for _ in range(count):
            voice = f"{rng.choice(settings.accents)}+{rng.choice(settings.variants)}"
            items.append(Request(word, voice, rng.randint(*settings.speed), rng.randint(*settings.pitch)))
    return items


def corpus_key(settings: CorpusSettings, version: str) -> str:
    blob = json.dumps({"settings": asdict(settings), "espeak": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_corpus(cache_dir: Path, settings: CorpusSettings, workers: int = 2, progress: bool = True) -> Path:
    """The corpus folder (with ``train/`` and ``val/``), synthesised on first use with a progress bar."""
    speaker = find_speaker()
    root = Path(cache_dir) / "audio" / f"espeak-digits-{corpus_key(settings, speaker.version)}"
    if (root / "corpus.json").is_file():
        return root
    jobs = [(u, split, i) for split in ("train", "val") for i, u in enumerate(draw_utterances(settings, split))]
    partial = root.with_name(f"{root.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for split in ("train", "val"):
        for word in DIGITS:
            (partial / split / word).mkdir(parents=True, exist_ok=True)

    def run(job: tuple[Request, str, int]) -> None:
        request, split, index = job
        data, rate = speaker.speak(request)
        soundfile.write(str(partial / split / request.text / f"{index:05d}.wav"), data, rate, subtype="PCM_16")

    columns = (TextColumn("[bold]synthesising spoken digits (once)"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar, \
            ThreadPoolExecutor(workers if speaker.parallel else 1) as pool:
        task = bar.add_task("espeak", total=len(jobs))
        for _ in pool.map(run, jobs):
            bar.advance(task)
    manifest = {"settings": asdict(settings), "espeak": speaker.version,
                "utterances": {split: [asdict(u) for u in draw_utterances(settings, split)] for split in ("train", "val")}}
    (partial / "corpus.json").write_text(json.dumps(manifest, indent=1))
    try:
        partial.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    return root


def corpus_settings(per_class: int, val_per_class: int, seed: int, accents: Sequence[str] | None = None,
                    variants: Sequence[str] | None = None) -> CorpusSettings:
    return CorpusSettings(per_class, val_per_class, seed, tuple(accents or ACCENTS), tuple(variants or VARIANTS))
