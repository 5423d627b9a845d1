"""Two ways to run eSpeak NG, both deterministic: the system ``espeak-ng`` program, or the library bundled
in the ``espeakng-loader`` wheel (``pip install mfkit-audio[espeak]``) when the program is missing.

The library keeps state between utterances (repeated calls in one process differ by a few samples), so
each utterance is spoken in a freshly forked child of a process that initialised the library but never
spoke: every utterance then starts from the same state, exactly like a new ``espeak-ng`` process.
"""
from __future__ import annotations

import ctypes
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soundfile

INSTALL_HINT = ("the spoken-digit corpus is synthesised with eSpeak NG, which is not installed. Install it with "
                "`sudo apt-get install espeak-ng` (Debian/Ubuntu), `sudo dnf install espeak-ng` (Fedora) or "
                "`brew install espeak-ng` (macOS), or `pip install espeakng-loader` (a wheel with the library, "
                "Linux and macOS), or point modality.params.folder at your own speech folder")


class EspeakMissing(RuntimeError):
    """eSpeak NG is not installed."""


@dataclass(frozen=True)
class Request:
    """One utterance: text, voice ("accent+variant"), speed (words per minute) and pitch (0-99)."""

    text: str
    voice: str
    speed: int
    pitch: int


class Speaker(Protocol):
    version: str
    parallel: bool

    def speak(self, request: Request) -> tuple[np.ndarray, int]:
        """int16 samples and their sample rate."""


class ProgramSpeaker:
    """The ``espeak-ng`` program, one process per utterance (WAV on stdout)."""

    parallel = True

    def __init__(self, program: str) -> None:
        self.program = program
        out = subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout
        self.version = out.split("Data at")[0].strip()

    def speak(self, request: Request) -> tuple[np.ndarray, int]:
        command = [self.program, "-v", request.voice, "-s", str(request.speed), "-p", str(request.pitch), "--stdout",
                   request.text]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0 or not result.stdout:
            raise RuntimeError(f"espeak-ng failed on {request}: {result.stderr.decode(errors='replace').strip()}")
        data, rate = soundfile.read(io.BytesIO(result.stdout), dtype="int16")
        return data, rate


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class LibrarySpeaker:
    """libespeak-ng from the ``espeakng-loader`` wheel, each utterance in a forked child (POSIX only)."""

    parallel = False
    _SYNCHRONOUS, _RATE, _PITCH, _POS_CHARACTER = 2, 1, 3, 1
    #: Voice names the program accepts that the library knows by another name (British English is "en").
    _ALIASES = {"en-gb": "en"}

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.rate = self.lib.espeak_Initialize(self._SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise EspeakMissing(f"the eSpeak NG library of espeakng-loader failed to start; {INSTALL_HINT}")
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self.version = f"libespeak-ng {self.lib.espeak_Info(None).decode()} (espeakng-loader)"

    def _speak_here(self, request: Request) -> np.ndarray:
        chunks: list[np.ndarray] = []

        def collect(wav, count, events):
            if count > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            return 0

        callback = _CALLBACK(collect)
        self.lib.espeak_SetSynthCallback(callback)
        accent, _, variant = request.voice.partition("+")
        voice = "+".join(filter(None, (self._ALIASES.get(accent, accent), variant)))
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"eSpeak NG has no voice {request.voice!r}")
        self.lib.espeak_SetParameter(self._RATE, request.speed, 0)
        self.lib.espeak_SetParameter(self._PITCH, request.pitch, 0)
        text = request.text.encode()
        self.lib.espeak_Synth(text, len(text) + 1, 0, self._POS_CHARACTER, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)

    def speak(self, request: Request) -> tuple[np.ndarray, int]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child speaks from the pristine state and exits at once
            status = 1
            try:
                os.close(read)
                with os.fdopen(write, "wb") as pipe:
                    pipe.write(self._speak_here(request).tobytes())
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            raise RuntimeError(f"eSpeak NG (library) failed on {request}")
        return np.frombuffer(data, np.int16), self.rate


def find_speaker() -> Speaker:
    """The system program when installed, else the espeakng-loader library, else :class:`EspeakMissing`."""
    program = shutil.which("espeak-ng")
    if program is not None:
        return ProgramSpeaker(program)
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        raise EspeakMissing(INSTALL_HINT) from None
    if not hasattr(os, "fork"):
        raise EspeakMissing(f"espeakng-loader needs a POSIX system here; {INSTALL_HINT}")
    return LibrarySpeaker()
