"""MS-COCO captions and VQA v1 (DABS image+text domain) read from tiny copies in their real layouts."""

import zipfile

import pytest
import torch
from torchvision import transforms

from dabs_rq.data.readers import vqa as reader
from dabs_rq.data.readers.tokenize import encode, load_tokenizer
from dabs_rq.run import run
from tests.conftest import compose_config, dabs_reference, fixture_root, load_split, missing_dataset, pipeline_overrides
from tests.dabs_fixtures import COCO_CATEGORY_IDS, VQA_CHOICES, VQA_QUESTIONS, serve_folder, write_mscoco, write_vqa
from tests.tokenizer_fixtures import write_bert_tokenizer


def dabs_image(path) -> torch.Tensor:
    """DABS's captioned-image transform, applied the way DABS does (on the RGB image, to float)."""
    return dabs_reference(
        path, transforms.Resize((640, 480)), transforms.CenterCrop((480, 480)), transforms.Resize((224, 224))
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return fixture_root(tmp_path_factory, write_mscoco, write_vqa, write_bert_tokenizer)


def _ids(data_root, first, second=None):
    return encode(load_tokenizer("bert-base-uncased", data_root), first, second, max_length=32)


def test_mscoco_image_last_caption_and_last_instance_label(data_root, data_cache):
    for split, part, count in (("train", "train2017", 12), ("test", "val2017", 6)):
        dataset = load_split("mscoco", split, data_root, data_cache)
        assert len(dataset) == count - 1  # the image without an instance annotation is dropped
        (image, tokens), labels = dataset[list(range(len(dataset)))]
        assert image.shape == (count - 1, 3, 224, 224) and image.dtype == torch.float32
        assert tokens.shape == (count - 1, 32) and tokens.dtype == torch.int32
        assert torch.equal(tokens, _ids(data_root, ["the cat is on the mat"] * (count - 1)))  # last caption wins
        # last instance wins; labels index COCO's sorted category list: category id COCO_CATEGORY_IDS[k] -> k
        assert labels.tolist() == [i % 80 + 1 for i in range(count - 1)]
        image_ids = [1000 * (part == "val2017") + 7 * i + 9 for i in range(count - 1)]
        for i in (0, 1):
            assert torch.equal(image[i], dabs_image(data_root / "mscoco" / part / f"{image_ids[i]:012d}.jpg"))
    assert len(COCO_CATEGORY_IDS) == 80


def _vqa_examples(part, count):
    """(file name, question, gold, choices) of the kept questions, in annotation order (2 per image)."""
    out = []
    for i in range(count):
        image_id = 500000 * (part == "val2014") + 13 * i + 1
        for k in range(2):
            out.append((f"COCO_{part}_{image_id:012d}.jpg", VQA_QUESTIONS[k], VQA_CHOICES[(i + k) % 6]))
    return out


def _decoded_answers(data_root, tokens):
    tok = load_tokenizer("bert-base-uncased", data_root)
    sep = tok.convert_tokens_to_ids("[SEP]")
    return [
        tok.decode([t for t in row[row.index(sep) + 1 :] if t != sep], skip_special_tokens=True)
        for row in tokens.tolist()
    ]


def test_vqa_pairs_right_or_wrong_answers_with_images(data_root, data_cache):
    for split, part, images in (("train", "train2014", 8), ("test", "val2014", 4)):
        dataset = load_split("vqa", split, data_root, data_cache)
        examples = _vqa_examples(part, images)
        assert len(dataset) == len(examples)  # questions whose gold answer is not a choice are dropped
        (image, tokens), labels = dataset[list(range(len(dataset)))]
        assert image.shape == (len(examples), 3, 224, 224) and tokens.shape == (len(examples), 32)
        assert tokens.dtype == torch.int32 and set(labels.tolist()) == {0, 1}
        answers = _decoded_answers(data_root, tokens)
        for (_file_name, question, gold), answer, label, ids in zip(examples, answers, labels.tolist(), tokens):
            assert (answer == gold) == (label == 1) and answer in VQA_CHOICES
            assert torch.equal(ids, _ids(data_root, [question], [answer])[0])
        for i in (0, 1, 2):  # two questions share an image
            assert torch.equal(image[i], dabs_image(data_root / "vqa" / part / examples[i][0]))


def test_vqa_answer_seed_quirk(data_root, data_cache, tmp_path):
    kwargs = dict(root=data_root / "vqa", tokenizer="bert-base-uncased")
    default = load_split("vqa", "train", data_root, data_cache).labels
    assert torch.equal(reader.vqa("train", cache_dir=tmp_path / "fresh", **kwargs).labels, default)
    assert not torch.equal(reader.vqa("train", cache_dir=tmp_path / "fresh", answer_seed=1, **kwargs).labels, default)
    unseeded = [reader.vqa("train", cache_dir=tmp_path / "fresh", answer_seed=None, **kwargs) for _ in range(3)]
    assert len({tuple(d.labels.tolist()) for d in unseeded}) > 1  # DABS: new labels on every load
    (_, tokens), labels = unseeded[0][list(range(len(unseeded[0])))]
    answers = _decoded_answers(data_root, tokens)
    assert [a == gold for a, (_, _, gold) in zip(answers, _vqa_examples("train2014", 8))] == labels.bool().tolist()


@pytest.mark.parametrize("name,hint", [("mscoco", "images.cocodataset.org"), ("vqa", "cvmlp")])
def test_missing_data_says_how_to_get_it(name, hint, tmp_path):
    with missing_dataset(name, f"download=true.*{hint}"):
        load_split(name, "train", tmp_path, tmp_path / "cache")


def test_mscoco_download_fetches_and_unpacks_the_coco_zips(data_root, tmp_path, monkeypatch):
    served = tmp_path / "served"
    (served / "annotations").mkdir(parents=True)
    (served / "zips").mkdir()
    with zipfile.ZipFile(served / "annotations" / "annotations_trainval2017.zip", "w") as z:
        for path in (data_root / "mscoco" / "annotations").iterdir():
            z.write(path, f"annotations/{path.name}")
    with zipfile.ZipFile(served / "zips" / "val2017.zip", "w") as z:
        for path in (data_root / "mscoco" / "val2017").iterdir():
            z.write(path, f"val2017/{path.name}")
    root = tmp_path / "data" / "mscoco"
    write_bert_tokenizer(root.parent)
    with serve_folder(served) as url:
        monkeypatch.setattr(reader, "COCO_URL", url)
        dataset = reader.mscoco("test", cache_dir=tmp_path / "cache", root=root, download=True)
    assert len(dataset) == 5 and (root / "val2017").is_dir() and not list(root.glob("*.zip"))


def test_tiny_pretrain_and_transfer_run(data_root, data_cache, tmp_path):
    (record,) = run(
        compose_config(
            pipeline_overrides(data_root, tmp_path, data_cache, domain="mscoco", algorithm="emix", batch_size=8)
        )
    )
    assert record["dataset"] == "vqa" and record["paper_name"] == "VQA" and record["domain"] == "Vision/Language"
    assert record["metric"] == "accuracy" and 0 <= record["value"] <= 100
    assert record["protocol"]["task"]["num_outputs"] == 1 and record["reader_options"] == {"answer_seed": 0}
    assert (record["protocol"]["n_train"], record["protocol"]["n_test"]) == (16, 8)
