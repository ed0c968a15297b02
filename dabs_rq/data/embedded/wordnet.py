"""WordNet 3.0 glosses (Princeton WordNet license) as a text domain.

Reads the ``data.{noun,verb,adj,adv}`` files of the WordNet database (Debian package
``wordnet-base`` installs them to ``/usr/share/wordnet``; ``$WORDNET_DIR`` or the
``wordnet_dir`` option point elsewhere). Each synset gives a gloss (definition and
examples) and its lexicographer file, i.e. its *supersense*:

* ``pretrain``: every gloss of every part of speech (labels unused);
* ``noun_supersense``: gloss -> one of 26 noun supersenses (noun.animal, noun.artifact, ...);
* ``verb_supersense``: gloss -> one of 15 verb supersenses.

Splits are a seeded 80/20 split over synsets, optionally capped for speed. Text is
encoded with a word vocabulary built from all glosses, so every task of the domain
shares one embedding table.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from dabs_rq.data.splits import check_split
from dabs_rq.data.storage import CorruptDataError
from dabs_rq.data.tensor_dataset import TensorInputsDataset, cached_tensors, seeded_split
from dabs_rq.data.word_vocab import WordVocabulary

# The standard lexicographer file names, indexed by the lex_filenum field of data.* lines.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
TASKS = {"pretrain": None, "noun_supersense": "noun", "verb_supersense": "verb"}
DEFAULT_DIR = "/usr/share/wordnet"


def resolve_wordnet_dir(wordnet_dir: str | None) -> Path:
    path = Path(wordnet_dir or os.environ.get("WORDNET_DIR", DEFAULT_DIR))
    missing = [f"data.{pos}" for pos in PARTS_OF_SPEECH if not (path / f"data.{pos}").exists()]
    if missing:
        raise FileNotFoundError(
            f"WordNet 3.0 database not found in {path} (missing {', '.join(missing)}): "
            "install it with 'apt-get install wordnet-base' or set WORDNET_DIR"
        )
    return path


def parse_data_file(path: Path) -> tuple[list[str], list[str]]:
    """(gloss, supersense) for every synset line of a WordNet ``data.*`` file.

    The license header (lines starting with two spaces) is skipped; any other line that is not
    ``<offset> <lex_filenum> ... | <gloss>`` is a :class:`CorruptDataError` naming the file and line
    (it would otherwise vanish from the dataset without a word)."""
    glosses, supersenses = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for n, line in enumerate(handle, start=1):
            if line.startswith("  ") or not line.strip():  # license header
                continue
            fields, bar, gloss = line.partition("|")
            parts = fields.split()
            if not bar or len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) >= len(LEXNAMES):
                raise CorruptDataError(path, "not a synset line ('<offset> <lex_filenum> ... | <gloss>')", n)
            lex_filenum = int(parts[1])
            glosses.append(gloss.strip())
            supersenses.append(LEXNAMES[lex_filenum])
    return glosses, supersenses


def _build(root: Path, seq_len: int, vocab_size: int) -> dict:
    parsed = {pos: parse_data_file(root / f"data.{pos}") for pos in PARTS_OF_SPEECH}
    all_glosses = [g for pos in PARTS_OF_SPEECH for g in parsed[pos][0]]
    vocab = WordVocabulary.build(all_glosses, vocab_size)
    out: dict[str, torch.Tensor] = {}
    for pos in PARTS_OF_SPEECH:
        glosses, senses = parsed[pos]
        names = sorted(set(senses))
        out[f"{pos}_ids"] = vocab.encode(glosses, seq_len)
        out[f"{pos}_labels"] = torch.tensor([names.index(s) for s in senses])
    return out


def wordnet_glosses(
    split: str,
    cache_dir: Path,
    task: str = "noun_supersense",
    seq_len: int = 32,
    vocab_size: int = 8192,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    wordnet_dir: str | None = None,
) -> TensorInputsDataset:
    """Dataset of ([seq_len] token ids,) -> supersense label (see module doc)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    check_split(split)
    root = resolve_wordnet_dir(wordnet_dir)
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    key = f"wordnet_{digest}_L{seq_len}_V{vocab_size}.pt"
    data = cached_tensors(Path(cache_dir) / key, lambda: _build(root, seq_len, vocab_size))
    pos = TASKS[task]
    if pos is None:
        ids = torch.cat([data[f"{p}_ids"] for p in PARTS_OF_SPEECH])
        labels = torch.cat([data[f"{p}_labels"] for p in PARTS_OF_SPEECH])
    else:
        ids, labels = data[f"{pos}_ids"], data[f"{pos}_labels"]
    train_idx, test_idx = seeded_split(len(labels), test_fraction, seed)
    idx = train_idx if split == "train" else test_idx
    cap = max_train if split == "train" else max_test
    if cap is not None and cap < len(idx):
        idx = np.sort(np.random.RandomState(seed + 1).choice(idx, cap, replace=False))
    idx_t = torch.from_numpy(idx)
    return TensorInputsDataset([ids[idx_t]], labels[idx_t])
