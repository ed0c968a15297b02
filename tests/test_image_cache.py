"""The shared uint8 image cache (dabs_rq.data.image_cache): decode once, serve ToTensor's floats."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from dabs_rq.data.image_cache import (
    FileImages,
    ImageDataset,
    LazyImageDataset,
    ParallelRows,
    cache_file,
    image_dataset,
    list_digest,
)

RESIZE = transforms.Resize((8, 8))


def to_gray(image: Image.Image) -> Image.Image:
    return image.convert("L")


GRAY = transforms.Compose([to_gray, RESIZE])


@pytest.fixture
def photos(tmp_path):
    """Three small PNGs: random RGB, an RGBA one, and a grey one (equal channels once opened as RGB)."""
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    Image.fromarray(rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8), mode="RGBA").save(paths[1])
    Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8), mode="L").save(paths[2])
    return paths


def tensor_of(path, transform=RESIZE) -> torch.Tensor:
    """What DABS computes: ToTensor(transform(open(path).convert("RGB")))."""
    return transforms.ToTensor()(transform(Image.open(path).convert("RGB")))


def test_items_are_totensor_of_the_transformed_rgb_image(photos, tmp_path):
    labels = [2, 0, 1]
    dataset = image_dataset(FileImages(photos), 3, RESIZE, labels, cache=tmp_path / "c.npy", shape=(3, 8, 8))
    assert dataset.supports_batch_indexing and dataset.images.dtype == np.uint8
    for i, path in enumerate(photos):
        (image,), label = dataset[i]
        assert image.dtype == torch.float32 and torch.equal(image, tensor_of(path)) and int(label) == labels[i]
    (batch,), batch_labels = dataset[[2, 0]]
    assert torch.equal(batch, torch.stack([tensor_of(photos[2]), tensor_of(photos[0])]))
    assert batch_labels.tolist() == [1, 2]


def test_cache_is_built_once_and_reused(photos, tmp_path):
    opened = []

    def open_image(i: int) -> Image.Image:
        opened.append(i)
        return FileImages(photos)(i)

    first = image_dataset(open_image, 3, RESIZE, [0, 1, 2], cache=tmp_path / "c.npy", shape=(3, 8, 8), workers=0)
    again = image_dataset(open_image, 3, RESIZE, [0, 1, 2], cache=tmp_path / "c.npy", shape=(3, 8, 8))
    assert opened == [0, 1, 2] and np.array_equal(first.images, again.images)


def test_one_channel_storage_is_repeated_to_three_on_read(photos, tmp_path):
    dataset = image_dataset(FileImages(photos), 3, GRAY, [0, 0, 0], cache=tmp_path / "g.npy", shape=(1, 8, 8))
    assert dataset.images.shape == (3, 1, 8, 8)
    (image,), _ = dataset[2]
    assert image.shape == (3, 8, 8) and torch.equal(image, tensor_of(photos[2]))  # equal RGB channels: exact
    (batch,), _ = dataset[[0, 1]]
    assert batch.shape == (2, 3, 8, 8) and torch.equal(batch[:, 0], batch[:, 2])


def test_examples_map_to_image_rows_and_carry_extra_inputs(photos, tmp_path):
    tokens = torch.arange(8, dtype=torch.int32).reshape(4, 2)
    dataset = image_dataset(
        FileImages(photos),
        3,
        RESIZE,
        [1, 0, 1, 1],
        cache=tmp_path / "r.npy",
        shape=(3, 8, 8),
        rows=[0, 0, 2, 1],
        extra=[tokens],
    )
    assert len(dataset) == 4 and len(dataset.images) == 3  # one row per distinct image
    (image, ids), label = dataset[2]
    assert torch.equal(image, tensor_of(photos[2])) and ids.tolist() == [4, 5] and int(label) == 1
    (images, ids), labels = dataset[[1, 3]]
    assert torch.equal(images[0], tensor_of(photos[0])) and torch.equal(images[1], tensor_of(photos[1]))
    assert ids.dtype == torch.int32 and ids.tolist() == [[2, 3], [6, 7]] and labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="one entry per label"):
        ImageDataset(dataset.images, [0, 1], rows=[0, 1, 2])


def test_on_the_fly_variant_gives_the_cached_items_and_can_go_to_workers(photos, tmp_path):
    kwargs = dict(shape=(1, 8, 8), rows=[2, 1, 0], extra=[np.arange(3)])
    cached = image_dataset(FileImages([str(p) for p in photos]), 3, GRAY, [0, 1, 2], cache=tmp_path / "l.npy", **kwargs)
    lazy = pickle.loads(
        pickle.dumps(image_dataset(FileImages([str(p) for p in photos]), 3, GRAY, [0, 1, 2], cache=None, **kwargs))
    )
    assert isinstance(lazy, LazyImageDataset) and not lazy.supports_batch_indexing
    assert [p.name for p in tmp_path.rglob("*.npy")] == ["l.npy"]  # the lazy one wrote no cache
    for i in range(3):
        (a, ea), ya = cached[i]
        (b, eb), yb = lazy[i]
        assert torch.equal(a, b) and int(ea) == int(eb) and int(ya) == int(yb)


def test_file_images_open_as_rgb_and_crop_to_their_box(photos):
    box = (2, 1, 6, 8)
    image = FileImages(photos, boxes=[box, box, box])(1)  # the RGBA file
    assert image.size == (4, 7) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(photos[1]).convert("RGB").crop(box)))


def test_parallel_decoding_keeps_row_order_across_chunks():
    with ParallelRows(lambda i: np.full(2, i), count=10, workers=3, chunk=4) as fill:
        assert [int(fill(i)[0]) for i in range(10)] == list(range(10))
    with ParallelRows(lambda i: np.full(2, i), count=10, workers=0) as fill:  # in the calling thread
        assert [int(fill(i)[0]) for i in range(10)] == list(range(10)) and fill._pool is None


def test_list_digest_and_cache_file_change_with_what_shapes_the_pixels(tmp_path):
    files = ["a.jpg", "b.jpg"]
    assert list_digest(files) == list_digest(iter(files)) != list_digest(files[::-1])
    assert list_digest(zip(files, [0, 1])) != list_digest(zip(files, [1, 0]))
    path = cache_file(tmp_path, "dtd", "train", files=list_digest(files), size=224)
    assert path == cache_file(tmp_path, "dtd", "train", size=224, files=list_digest(files))
    assert path.parent == tmp_path / "images" and path.name.startswith("dtd-train-") and path.suffix == ".npy"
    assert (
        len(
            {
                path,
                cache_file(tmp_path, "dtd", "test", files=list_digest(files), size=224),
                cache_file(tmp_path, "dtd", "train", files=list_digest(files), size=96),
                cache_file(tmp_path, "dtd", "train", files=list_digest(files[:1]), size=224),
            }
        )
        == 4
    )
