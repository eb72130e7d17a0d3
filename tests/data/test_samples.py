"""Image folders read on demand (data/samples.py, data/loader.py): the same numbers as decoding
everything at once, in the same order with any number of worker processes."""

import numpy as np
import pytest
import torch
from PIL import Image

from edge_distill.config import DataConfig
from edge_distill.data.dataset import Dataset, load_dataset
from edge_distill.data.loader import read_batches
from edge_distill.data.samples import Concat, ImageFiles
from edge_distill.errors import DataError


@pytest.fixture
def rgb_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / "images" / name / f"{i}.png")
    return tmp_path / "images"


def _decoded(files) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f), np.float32).transpose(2, 0, 1) for f in files])


def test_image_folder_stays_on_disk_with_the_statistics_of_decoding_it_all(rgb_folder, tmp_path):
    dataset = load_dataset(DataConfig(source=str(rgb_folder), color_mode="rgb"), seed=0)
    train = dataset.x["train"]
    assert isinstance(train, ImageFiles) and train.shape == (len(dataset.y["train"]), 3, 6, 5)
    raw = _decoded(train.files) / 255.0  # what the eager reader held: every training image at once
    pre = dataset.preprocessing
    np.testing.assert_allclose(pre["mean"], raw.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(pre["std"], raw.std(axis=(0, 2, 3)) + 1e-6, atol=1e-6)
    normalized = (raw - np.asarray(pre["mean"])[:, None, None]) / np.asarray(pre["std"])[:, None, None]
    np.testing.assert_allclose(train[np.arange(len(train))], normalized, atol=1e-4)
    # The saved dataset holds paths, not pixels, and reads back the same samples.
    dataset.save(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as f:
        assert "files_test" in f.files and "x_test" not in f.files
    np.testing.assert_array_equal(Dataset.load(tmp_path / "d.npz").x["test"][[2, 0]], dataset.x["test"][[2, 0]])


def test_workers_read_the_same_batches_in_the_callers_order(rgb_folder):
    files = sorted(str(f) for f in rgb_folder.rglob("*.png"))
    x = ImageFiles(files, "rgb", (), (3, 6, 5))
    order = [np.array([7, 3, 29]), np.array([0]), np.array([12, 11])]
    here = list(read_batches(x, order, workers=0))
    workers = list(read_batches(x, order, workers=2))
    assert [i.tolist() for _, i in workers] == [o.tolist() for o in order]
    for (a, _), (b, _) in zip(here, workers):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(here[0][0], torch.from_numpy(_decoded([files[7], files[3], files[29]])))


def test_a_file_broken_after_the_data_stage_is_named_not_a_worker_traceback(rgb_folder):
    files = sorted(str(f) for f in rgb_folder.rglob("*.png"))
    x = ImageFiles(files, "rgb", (), (3, 6, 5))
    open(files[4], "wb").write(b"not an image")
    with pytest.raises(DataError) as caught:
        list(read_batches(x, [np.arange(0, 3), np.arange(3, 6)], workers=2))
    assert caught.value.message.startswith(f"{files[4]}: cannot read image") and "Traceback" not in str(caught.value)


def test_mixed_sample_sets_read_as_one_in_index_order(rgb_folder):
    files = sorted(str(f) for f in rgb_folder.rglob("*.png"))
    images = ImageFiles(files[:4], "rgb", (), (3, 6, 5))
    array = np.arange(2 * 3 * 6 * 5, dtype=np.float32).reshape(2, 3, 6, 5)
    both = Concat([images, array])
    picked = both[np.array([5, 1, 4])]
    np.testing.assert_array_equal(picked[0], array[1])
    np.testing.assert_array_equal(picked[1], _decoded([files[1]])[0])
    np.testing.assert_array_equal(picked[2], array[0])
