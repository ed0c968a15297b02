"""Offline speech synthesis through libespeak-ng as shipped in the ``espeakng-loader`` wheel.

The wheel carries the shared library and its voice data, so no system package is
needed; we drive the C API (``espeak_Initialize``/``espeak_Synth``) with ctypes in
synchronous mode and collect the 16-bit samples from the synthesis callback.

libespeak-ng is not a pure function of its arguments: it draws random numbers (seeded by
``espeak_ng_SetRandSeed``) and keeps state from one utterance to the next that
``espeak_Initialize`` does not reset. :func:`synthesize_all` therefore synthesizes a whole list
of utterances in a fresh process with the random seed set first, so the same list gives the
same audio, bit for bit, whatever the calling process synthesized before.
"""

from __future__ import annotations

import ctypes
import pickle
import subprocess
import sys
from collections.abc import Sequence

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakSynthesizer:
    """Synthesizes text to int16 mono audio at ``sample_rate`` (22,050 Hz for espeak-ng)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:  # pragma: no cover - dependency of the package
            raise RuntimeError(
                "speech synthesis needs the 'espeakng-loader' wheel: pip install espeakng-loader"
            ) from err
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError("libespeak-ng failed to initialise")
        self._chunks: list[np.ndarray] = []

        def collect(wav, num_samples, _events):  # called by the library during espeak_Synth
            if num_samples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: the library holds a raw pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def seed(self, seed: int) -> None:
        """Seed the library's random numbers (the audio of what follows is then reproducible)."""
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(int(seed)))

    def synthesize(self, text: str, voice: str, pitch: int, rate: int) -> np.ndarray:
        """One utterance of ``text`` by ``voice`` (e.g. ``"en-us+m3"``) at ``pitch`` 0-99, ``rate`` wpm."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self._chunks.clear()
        data = text.encode()
        self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, 0, None, None)
        self._lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


#: One utterance: (text, voice, pitch 0-99, rate in words per minute).
Utterance = tuple[str, str, int, int]


def _synthesize_in_this_process(utterances: Sequence[Utterance], seed: int) -> tuple[int, list[np.ndarray]]:
    synth = EspeakSynthesizer()
    synth.seed(seed)
    return synth.sample_rate, [synth.synthesize(*utterance) for utterance in utterances]


def synthesize_all(utterances: Sequence[Utterance], seed: int) -> tuple[int, list[np.ndarray]]:
    """(sample rate, int16 audio of every utterance in order), synthesized in a fresh Python process
    (``python -m dabs_rq.data.embedded.espeak``, which never imports the caller's main module) with
    espeak-ng's random seed set to ``seed``: the same utterances and seed give the same audio in any
    process, at any time."""
    done = subprocess.run(
        [sys.executable, "-m", __name__],
        input=pickle.dumps((list(utterances), int(seed))),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"espeak-ng synthesis failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return pickle.loads(done.stdout)  # our own child's output over our own pipe


if __name__ == "__main__":  # the fresh process of synthesize_all: utterances on stdin, audio on stdout
    _utterances, _seed = pickle.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(pickle.dumps(_synthesize_in_this_process(_utterances, _seed)))
