"""Tiny copies of the DABS speech datasets in their real on-disk layouts, written with soundfile.

Each writer puts one dataset under ``<data_root>/<data.folder>`` exactly as the original
archive or clone unpacks (file names, split lists, CSV columns), with clips a fraction
of a second long, and returns the expected split sizes. A few clips are longer than
the 150,526-sample window so that the first/last-window logic is exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

LONG = 150_526 + 4_000  # samples: longer than the DABS window


def write_clip(
    path: Path,
    seconds: float = 0.1,
    rate: int = 16_000,
    seed: int = 0,
    samples: int | None = None,
    fmt: str | None = None,
) -> np.ndarray:
    """A reproducible tone-plus-noise clip (int16 PCM, like the real files); returns what a reader decodes."""
    n = samples if samples is not None else int(seconds * rate)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 40 * (seed % 20)) * t) + 0.05 * rng.standard_normal(n)
    pcm = np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, rate, subtype="PCM_16", format=fmt)
    return pcm.astype(np.float32) / 32768.0


def write_librispeech(root: Path) -> dict:
    """``LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` + ``<spk>-<chapter>.trans.txt``."""
    base = root / "librispeech" / "LibriSpeech"
    layout = {  # subset -> {speaker: (chapter, utterances)}
        "train-clean-100": {19: (198, 2), 26: (495, 2)},
        "train-clean-360": {100: (1234, 2)},
        "train-other-500": {200: (4321, 2)},
        "dev-clean": {84: (121123, 5), 174: (50561, 5), 251: (136532, 5), 422: (122949, 5)},
    }
    seed = 0
    for subset, speakers in layout.items():
        for speaker, (chapter, n) in speakers.items():
            folder = base / subset / str(speaker) / str(chapter)
            lines = []
            for utt in range(n):
                fileid = f"{speaker}-{chapter}-{utt:04d}"
                long = subset == "train-clean-100" and speaker == 19 and utt == 0
                write_clip(folder / f"{fileid}.flac", seed=seed, samples=LONG if long else 1_600 + 160 * utt)
                lines.append(f"{fileid} SOME WORDS NUMBER {utt}")
                seed += 1
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return {"librispeech": (8, 20), "librispeech_transfer": (16, 4)}


def write_speech_commands(root: Path) -> dict:
    """``SpeechCommands/speech_commands_v0.02/<word>/<hash>_nohash_N.wav`` + the two list files."""
    base = root / "google_speech" / "SpeechCommands" / "speech_commands_v0.02"
    hashes = ["0a7c2a8d", "0b09edd3", "1afd49bf", "2d92f18b"]
    val, test = [], []
    for w, word in enumerate(["yes", "no", "up"]):
        for h, name in enumerate(hashes):
            write_clip(base / word / f"{name}_nohash_{h % 2}.wav", seed=10 + 4 * w + h, samples=16_000 - 100 * h)
        val.append(f"{word}/{hashes[1]}_nohash_1.wav")
        test.append(f"{word}/{hashes[2]}_nohash_0.wav")
    write_clip(base / "_background_noise_" / "white_noise.wav", seed=40, samples=LONG)
    write_clip(base / "_background_noise_" / "running_tap.wav", seed=41, samples=8_000)
    (base / "_background_noise_" / "README.md").write_text("background noise\n")
    (base / "validation_list.txt").write_text("\n".join(val) + "\n")
    (base / "testing_list.txt").write_text("\n".join(test) + "\n")
    (base / "LICENSE").write_text("CC BY 4.0\n")
    # DABS bug: all 12 word clips + 2 background + 3 validation again; fixed: 6 + 3 + 2
    return {"google_speech": (17, 3), "google_speech_fixed": (11, 3)}


def write_voxceleb1(root: Path) -> dict:
    """``wav/idXXXXX/<youtube id>/NNNNN.wav`` + ``iden_split.txt`` (1 train, 2 dev, 3 test)."""
    base = root / "voxceleb1"
    lines = []
    seed = 50
    for speaker in ("id10001", "id10002", "id10003"):
        for v, video in enumerate(("1zcIwhmdeo4", "7gWzIy6yIIk")):
            for u in (1, 2):
                relative = f"{speaker}/{video}/{u:05d}.wav"
                write_clip(base / "wav" / relative, seed=seed, samples=LONG if seed == 50 else 4_000)
                lines.append(f"{[1, 1, 2, 3][2 * v + u - 1]} {relative}")
                seed += 1
    (base / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return {"voxceleb1": (9, 3)}


def write_audio_mnist(root: Path) -> dict:
    """A clone of soerenab/AudioMNIST: ``data/NN/{digit}_{speaker}_{rep}.wav`` at 48 kHz + the meta file."""
    base = root / "audio_mnist" / "data"
    seed = 70
    for speaker in (1, 12, 26, 5):  # 1: train, 12: validation (-> train), 26 and 5: test
        for digit, rep in ((speaker % 10, 0), ((speaker + 3) % 10, 0), ((speaker + 3) % 10, 1)):
            write_clip(
                base / f"{speaker:02d}" / f"{digit}_{speaker:02d}_{rep}.wav",
                rate=48_000,
                seed=seed,
                samples=24_000 + 480 * rep,
            )
            seed += 1
    (base / "audioMNIST_meta.txt").write_text('{"01": {"accent": "german"}}\n')
    return {"audio_mnist": (6, 6)}


FLUENT_ROWS = [  # (speaker, transcription, action, object, location)
    ("2BqVo8kVB2Skwgyb", "Change language", "change language", "none", "none"),
    ("2BqVo8kVB2Skwgyb", "Turn on the kitchen lights", "activate", "lights", "kitchen"),
    ("4BrX8aDqK2cLZRYl", "Bring me my socks", "bring", "socks", "none"),
    ("4BrX8aDqK2cLZRYl", "Switch to German", "change language", "German", "none"),
    ("2BqVo8kVB2Skwgyb", "Decrease the heat in the washroom", "decrease", "heat", "washroom"),
    ("4BrX8aDqK2cLZRYl", "Louder", "increase", "volume", "none"),
    ("2BqVo8kVB2Skwgyb", "Lights off in the bedroom", "deactivate", "lights", "bedroom"),
    ("4BrX8aDqK2cLZRYl", "Use Chinese", "change language", "Chinese", "none"),
    ("2BqVo8kVB2Skwgyb", "Bring the newspaper", "bring", "newspaper", "none"),
]


def write_fluent(root: Path) -> dict:
    """``fluent_speech_commands_dataset/wavs/speakers/<spk>/<uuid>.wav`` + ``data/{train,valid,test}_data.csv``."""
    base = root / "fluent_speech" / "fluent_speech_commands_dataset"
    records = []
    for i, (speaker, text, action, obj, location) in enumerate(FLUENT_ROWS):
        relative = f"wavs/speakers/{speaker}/{i:08x}-4474-11e9-a9a5-5dbec3b8816a.wav"
        write_clip(base / relative, seed=90 + i, samples=LONG if i == 0 else 8_000 + 100 * i)
        records.append(
            {
                "path": relative,
                "speakerId": speaker,
                "transcription": text,
                "action": action,
                "object": obj,
                "location": location,
            }
        )
    (base / "data").mkdir(parents=True, exist_ok=True)
    for subset, rows in (("train", records[:4]), ("valid", records[4:6]), ("test", records[6:])):
        pd.DataFrame(rows).to_csv(base / "data" / f"{subset}_data.csv")  # leading unnamed index column, as shipped
    return {"fluent_speech_location": (6, 3), "fluent_speech_action": (6, 3), "fluent_speech_object": (6, 3)}


def write_all(root: Path) -> dict:
    """Every speech dataset under ``root``; returns {dataset name: (train size, test size)}."""
    sizes: dict = {}
    for writer in (write_librispeech, write_speech_commands, write_voxceleb1, write_audio_mnist, write_fluent):
        sizes.update(writer(root))
    return sizes
