"""Tiny copies of DABS's text datasets in their real on-disk layouts, written by the tests.

* GLUE / PAWS-X / WikiText as on the hub: ``<folder>/<config>/<split>-NNNNN-of-NNNNN.parquet``
  (``nyu-mll/glue``, ``google-research-datasets/paws-x``, ``Salesforce/wikitext``);
* the original archives: GLUE TSVs (``CoLA`` header-less, MRPC with a byte-order mark, MNLI
  label strings), PAWS-X ``x-final`` TSVs, WikiText ``wiki.*.tokens``;
* mC4 as ``allenai/c4`` json.gz shards: ``c4/multilingual/c4-<lang>[-validation].tfrecord-*.json.gz``;
* tokenizers: the tiny bert of :mod:`tests.tokenizer_fixtures` and a tiny XLM-R-like Unigram one.

Every split has a known number of rows that a reader must keep (``EXPECTED``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

from dabs_rq.data.readers.text import GLUE_TASKS, MC4_LANGUAGES
from tests.tokenizer_fixtures import WORDS, write_bert_tokenizer

ENGLISH = [w for w in WORDS if w.isalpha()]
#: One sentence per PAWS-X / mC4 language (the tiny XLM-R vocabulary is built from these).
SENTENCES = {
    "en": "the dog is on the mat",
    "fr": "le chien est sur le tapis",
    "es": "el perro está en la alfombra",
    "de": "der Hund ist auf der Matte",
    "zh": "狗在垫子上",
    "ja": "犬はマットの上にいる",
    "ko": "개가 매트 위에 있다",
}
PAWS_LANGUAGES = ("en", "fr", "es", "de", "zh", "ja", "ko")
GLUE_TRAIN, GLUE_EVAL, MNLI_MISMATCHED = 10, 6, 4  # rows per split, one of them with an empty input
PAWS_TRAIN, PAWS_EVAL = 10, 5  # train has one label -1 row and one empty sentence
C4_SHARDS, C4_DOCS_PER_SHARD = 2, 2


def sentence(i: int, length: int = 4) -> str:
    """A deterministic sentence made of the tiny bert vocabulary."""
    return " ".join(ENGLISH[(i * 3 + k) % len(ENGLISH)] for k in range(length))


def glue_label(config: str, i: int) -> float | int:
    if config == "stsb":
        return round((i % 6) * 0.8, 1)
    return i % 3 if config == "mnli" else i % 2


def glue_frame(config: str, rows: int, offset: int = 0) -> pd.DataFrame:
    """A GLUE split in hub columns; row 1 has an empty last input (DABS drops it)."""
    columns = GLUE_TASKS[config].inputs
    data = {c: [sentence(offset + i + 7 * j, 3 + j) for i in range(rows)] for j, c in enumerate(columns)}
    data[columns[-1]][1] = ""
    data["label"] = [glue_label(config, offset + i) for i in range(rows)]
    data["idx"] = list(range(rows))
    return pd.DataFrame(data)


def write_parquet(frame: pd.DataFrame, folder: Path, split: str, shards: int = 1) -> None:
    """``<folder>/<split>-0000k-of-0000n.parquet`` as the hub stores a split."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(frame) // shards)
    for k in range(shards):
        part = frame.iloc[k * size : (k + 1) * size]
        part.to_parquet(folder / f"{split}-{k:05d}-of-{shards:05d}.parquet", index=False)


def glue_splits(config: str) -> dict[str, pd.DataFrame]:
    if config == "mnli":
        return {
            "train": glue_frame(config, GLUE_TRAIN),
            "validation_matched": glue_frame(config, GLUE_EVAL, 100),
            "validation_mismatched": glue_frame(config, MNLI_MISMATCHED, 200),
        }
    return {"train": glue_frame(config, GLUE_TRAIN), "validation": glue_frame(config, GLUE_EVAL, 100)}


def write_glue_hub(data_root: Path) -> None:
    for config in GLUE_TASKS:
        for split, frame in glue_splits(config).items():
            write_parquet(frame, data_root / "glue" / config, split, shards=2 if split == "train" else 1)


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([("\ufeff" if bom else "") + "\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_glue_tsv(data_root: Path) -> None:
    """CoLA (no header), MNLI (label strings, extra columns), MRPC (BOM), QNLI, STS-B as in the GLUE zips."""
    glue = data_root / "glue"
    for split, file, offset in (("train", "train.tsv", 0), ("validation", "dev.tsv", 100)):
        n = GLUE_TRAIN if split == "train" else GLUE_EVAL
        cola = glue_frame("cola", n, offset)
        cola.loc[0, "sentence"] = 'the "dog" is red'  # quotes are literal in GLUE TSVs
        write_tsv(glue / "cola" / file, None, [["gj04", str(r.label), "", r.sentence] for r in cola.itertuples()])
        mrpc = glue_frame("mrpc", n, offset)
        write_tsv(
            glue / "mrpc" / file,
            ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            [[str(r.label), "1", "2", r.sentence1, r.sentence2] for r in mrpc.itertuples()],
            bom=True,
        )
        qnli = glue_frame("qnli", n, offset)
        write_tsv(
            glue / "qnli" / file,
            ["index", "question", "sentence", "label"],
            [
                [str(i), r.question, r.sentence, ["entailment", "not_entailment"][r.label]]
                for i, r in enumerate(qnli.itertuples())
            ],
        )
        stsb = glue_frame("stsb", n, offset)
        write_tsv(
            glue / "stsb" / file,
            [
                "index",
                "genre",
                "filename",
                "year",
                "old_index",
                "source1",
                "source2",
                "sentence1",
                "sentence2",
                "score",
            ],
            [
                [str(i), "main", "f", "2012", "0", "s", "s", r.sentence1, r.sentence2, f"{r.label:.3f}"]
                for i, r in enumerate(stsb.itertuples())
            ],
        )
    names = ["entailment", "neutral", "contradiction"]
    for split, file in (
        ("train", "train.tsv"),
        ("validation_matched", "dev_matched.tsv"),
        ("validation_mismatched", "dev_mismatched.tsv"),
    ):
        frame = glue_splits("mnli")[split]
        write_tsv(
            glue / "mnli" / file,
            ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"],
            [
                [str(i), "1", "1e", "fiction", r.premise, r.hypothesis, names[r.label], names[r.label]]
                for i, r in enumerate(frame.itertuples())
            ],
        )


def wikitext_lines(rows: int, offset: int = 0) -> list[str]:
    """WikiText-style lines: a heading, text lines, and empty lines between them."""
    lines = []
    for i in range(rows):
        lines += [f" = {sentence(offset + i, 2)} = \n" if i % 4 == 0 else f" {sentence(offset + i, 6)} . \n", ""]
    return lines


WIKITEXT_TRAIN, WIKITEXT_EVAL = 20, 5  # non-empty lines


def write_wikitext_hub(data_root: Path) -> None:
    folder = data_root / "wikitext" / "wikitext-103-v1"
    write_parquet(pd.DataFrame({"text": wikitext_lines(WIKITEXT_TRAIN)}), folder, "train", shards=2)
    write_parquet(pd.DataFrame({"text": wikitext_lines(WIKITEXT_EVAL, 50)}), folder, "validation")


def write_wikitext_tokens(data_root: Path) -> None:
    """``wiki.{train,valid}.tokens`` of the original wikitext-103-v1.zip (blank lines are a single space)."""
    folder = data_root / "wikitext" / "wikitext-103-v1"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows, offset in (("train", WIKITEXT_TRAIN, 0), ("valid", WIKITEXT_EVAL, 50)):
        text = "".join(line or " \n" for line in wikitext_lines(rows, offset))
        (folder / f"wiki.{name}.tokens").write_text(text, encoding="utf-8")


def paws_frame(language: str, rows: int, with_bad_rows: bool) -> pd.DataFrame:
    """PAWS-X pairs; with ``with_bad_rows``, row 2 is unlabelled (-1) and row 3 has an empty sentence2."""
    sep = " " if " " in SENTENCES[language] else ""
    words = SENTENCES[language].split() if sep else list(SENTENCES[language])
    first = [sep.join(words[i % len(words) :] + words[: i % len(words)]) for i in range(rows)]
    second = [sep.join(reversed(s.split() if sep else list(s))) + f" {i}" for i, s in enumerate(first)]
    labels = [i % 2 for i in range(rows)]
    if with_bad_rows:
        labels[2] = -1
        second[3] = ""
    return pd.DataFrame({"id": range(1, rows + 1), "sentence1": first, "sentence2": second, "label": labels})


def write_paws_x_hub(data_root: Path) -> None:
    for language in PAWS_LANGUAGES:
        folder = data_root / "paws-x" / language
        write_parquet(paws_frame(language, PAWS_TRAIN, True), folder, "train")
        write_parquet(paws_frame(language, PAWS_EVAL, False), folder, "validation")
        write_parquet(paws_frame(language, PAWS_EVAL, False), folder, "test")


def write_paws_x_tsv(data_root: Path, language: str = "fr") -> None:
    """``x-final/<lang>/{translated_train,dev_2k}.tsv`` (``train.tsv`` for en) of the PAWS-X archive."""
    folder = data_root / "paws-x" / language
    for name, frame in (
        ("train.tsv" if language == "en" else "translated_train.tsv", paws_frame(language, PAWS_TRAIN, True)),
        ("dev_2k.tsv", paws_frame(language, PAWS_EVAL, False)),
    ):
        write_tsv(folder / name, list(frame.columns), [[str(v) for v in row] for row in frame.itertuples(index=False)])


def c4_text(language: str, shard: int, doc: int, validation: bool = False) -> str:
    """Document ``doc`` of train shard ``shard`` (or of the validation shard) of one language."""
    return f"{SENTENCES[language]} {9 if validation else shard}{doc}"


def write_c4(data_root: Path, languages: tuple[str, ...] = MC4_LANGUAGES) -> None:
    """``allenai/c4`` multilingual shards: train ``c4-<lang>.tfrecord-0000k-of-00002.json.gz``, one validation shard."""
    folder = data_root / "c4" / "multilingual"
    folder.mkdir(parents=True, exist_ok=True)
    for language in languages:
        for split, shards in (("", C4_SHARDS), ("-validation", 1)):
            for k in range(shards):
                docs = [
                    {
                        "text": c4_text(language, k, d, validation=bool(split)),
                        "timestamp": "2019-04-22T08:00:00Z",
                        "url": f"https://example.org/{language}/{k}/{d}",
                    }
                    for d in range(C4_DOCS_PER_SHARD)
                ]
                path = folder / f"c4-{language}{split}.tfrecord-{k:05d}-of-{shards:05d}.json.gz"
                with gzip.open(path, "wt", encoding="utf-8") as handle:
                    handle.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)


def write_xlmr_tokenizer(data_root: Path, name: str = "xlm-roberta-base") -> Path:
    """A Unigram tokenizer shaped like XLM-R (``<s> A </s></s> B </s>``, pad id 1) over the fixture texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    text = " ".join(SENTENCES.values()) + " 0123456789"
    words = sorted({"▁" + w for w in text.split()})
    chars = sorted(set(text.replace(" ", "")) | {"▁"})
    vocab = [(t, 0.0) for t in specials] + [(w, -1.0) for w in words] + [(c, -5.0) for c in chars] + [("<mask>", 0.0)]
    core = Tokenizer(models.Unigram(vocab, unk_id=3))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.decoder = decoders.Metaspace()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )
    folder = Path(data_root) / "tokenizers" / name
    tokenizer.save_pretrained(folder)
    return folder


def write_text_data_root(data_root: Path) -> Path:
    """Every text dataset in its hub layout (mC4 as local shards) plus both tokenizers."""
    write_bert_tokenizer(data_root)
    write_xlmr_tokenizer(data_root)
    write_glue_hub(data_root)
    write_wikitext_hub(data_root)
    write_paws_x_hub(data_root)
    write_c4(data_root)
    return data_root


def write_original_layouts(data_root: Path) -> Path:
    """GLUE TSVs, PAWS-X (fr) TSVs and WikiText ``.tokens`` as in the original archives, plus tokenizers."""
    write_bert_tokenizer(data_root)
    write_xlmr_tokenizer(data_root)
    write_glue_tsv(data_root)
    write_paws_x_tsv(data_root)
    write_wikitext_tokens(data_root)
    return data_root
