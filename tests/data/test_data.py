import numpy as np
import pytest
from PIL import Image

from edge_distill.config import DataConfig
from edge_distill.data.dataset import Dataset, load_dataset
from edge_distill.errors import DataError, InputFileError


def test_digits_split_is_seeded_disjoint_and_normalized():
    first, again = load_dataset(DataConfig(), seed=0), load_dataset(DataConfig(), seed=0)
    other = load_dataset(DataConfig(), seed=1)
    sizes = {s: len(first.y[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 360
    np.testing.assert_array_equal(first.x["test"], again.x["test"])
    assert not np.array_equal(first.x["test"], other.x["test"])
    assert set(np.unique(first.y["test"])) == set(range(10))  # stratified: every class in test
    # Train-split statistics: the normalized training data has mean 0 and std 1.
    assert abs(first.x["train"].mean()) < 1e-4 and abs(first.x["train"].std() - 1) < 1e-3
    assert first.input_shape == (1, 8, 8) and first.labels == [str(i) for i in range(10)]


def test_dataset_round_trips_through_npz(tmp_path):
    dataset = load_dataset(DataConfig(), seed=0)
    dataset.save(tmp_path / "d.npz")
    loaded = Dataset.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(loaded.x["val"], dataset.x["val"])
    assert loaded.preprocessing == dataset.preprocessing and loaded.labels == dataset.labels


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return DataConfig(source=str(path))


def test_npz_source_with_uint8_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    cfg = _npz(tmp_path, x=rng.integers(0, 256, (60, 6, 6), dtype=np.uint8), y=np.arange(60) % 3,
               labels=np.array(["cat", "dog", "owl"]))
    dataset = load_dataset(cfg, seed=0)
    assert dataset.labels == ["cat", "dog", "owl"]
    assert dataset.input_shape == (1, 6, 6)
    assert dataset.preprocessing["pixel_scale"] == pytest.approx(1 / 255)


def test_image_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    dataset = load_dataset(DataConfig(source=str(tmp_path), color_mode="rgb", image_size=[8, 8]), seed=0)
    assert dataset.labels == ["circle", "square"]
    assert dataset.input_shape == (3, 8, 8)
    assert sum(len(y) for y in dataset.y.values()) == 12


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((0, 4, 4)), "y": np.zeros(0, dtype=int)}, "the dataset is empty"),
        ({"x": np.full((30, 4, 4), np.nan), "y": np.arange(30) % 2}, "contain NaN or inf"),
        ({"x": np.zeros((30, 4, 4))}, "missing array(s) y"),
        ({"x": np.zeros((30, 4, 4)), "y": np.zeros(29, dtype=int)}, "30 samples in x but 29 labels"),
        ({"x": np.zeros((30, 4, 4)), "y": np.zeros(30)}, "integer class ids"),
        ({"x": np.zeros((30, 4, 4)), "y": np.zeros(30, dtype=int)}, "at least 2 classes"),
    ],
)
def test_bad_npz_data_gives_one_line_errors(tmp_path, arrays, message):
    with pytest.raises(DataError) as e:
        load_dataset(_npz(tmp_path, **arrays), seed=0)
    assert message in e.value.message and "\n" not in e.value.message
    assert "data.npz" in e.value.message


def test_corrupt_npz_and_missing_source(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz"):
        load_dataset(DataConfig(source=str(bad)), seed=0)
    with pytest.raises(InputFileError, match="does not exist"):
        load_dataset(DataConfig(source=str(tmp_path / "nope.npz")), seed=0)


def test_labeled_samples_moves_the_rest_of_train_to_the_transfer_set():
    full = load_dataset(DataConfig(), seed=0)
    scarce = load_dataset(DataConfig(labeled_samples=100), seed=0)
    assert len(scarce.y["train"]) == 100 and set(np.unique(scarce.y["train"])) == set(range(10))
    assert len(scarce.x["transfer"]) == len(full.x["train"]) - 100
    np.testing.assert_array_equal(scarce.y["test"], full.y["test"])  # val and test are untouched
    with pytest.raises(DataError, match="fewer than the 10 classes"):
        load_dataset(DataConfig(labeled_samples=5), seed=0)


def test_transfer_set_from_an_unlabeled_npz_and_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    labeled = _npz(tmp_path, x=rng.integers(0, 256, (60, 6, 6), dtype=np.uint8), y=np.arange(60) % 3)
    np.savez(tmp_path / "unlabeled.npz", x=rng.integers(0, 256, (25, 6, 6), dtype=np.uint8))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(folder / f"{i}.png")
    for source, count in ((tmp_path / "unlabeled.npz", 25), (folder, 4)):
        dataset = load_dataset(DataConfig(source=labeled.source, transfer=str(source)), seed=0)
        assert dataset.x["transfer"].shape == (count, 1, 6, 6)
        assert dataset.x["transfer"].dtype == np.float32 and abs(np.asarray(dataset.x["transfer"]).mean()) < 0.5
    np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 7, 7), np.uint8))
    with pytest.raises(DataError, match=r"data.transfer: .*wrong.npz samples have shape \(1, 7, 7\), the labeled data \(1, 6, 6\)"):
        load_dataset(DataConfig(source=labeled.source, transfer=str(tmp_path / "wrong.npz")), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no PNG or JPEG images"):
        load_dataset(DataConfig(source=labeled.source, transfer=str(tmp_path / "empty")), seed=0)


def test_one_dimensional_signals(tmp_path):
    rng = np.random.default_rng(0)
    cfg = _npz(tmp_path, x=rng.standard_normal((60, 32)).astype(np.float32), y=np.arange(60) % 3)
    dataset = load_dataset(cfg, seed=0)
    assert dataset.input_shape == (1, 32) and dataset.preprocessing["layout"] == "NCL"
    channels = _npz(tmp_path, x=rng.standard_normal((60, 3, 32)).astype(np.float32), y=np.arange(60) % 3)
    assert load_dataset(DataConfig(source=channels.source, layout="NCL"), seed=0).input_shape == (3, 32)
    assert load_dataset(channels, seed=0).input_shape == (1, 3, 32)  # "auto": a 3-D array is grayscale images


def _raw(dataset, split):
    """A split's samples back on the raw pixel scale, for comparing with what was written."""
    pre = dataset.preprocessing
    return np.rint((np.asarray(dataset.x[split]) * pre["std"][0] + pre["mean"][0]) / pre["pixel_scale"]).astype(int)


def test_a_predefined_image_split_is_used_as_given(tmp_path):
    """train/ and test/ folders: every test image stays in test, none reaches training or validation."""
    for split, values in (("train", range(0, 120, 4)), ("test", range(1, 120, 8))):
        for i, value in enumerate(values):
            label = "even" if i % 2 == 0 else "odd"
            (tmp_path / "data" / split / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), value, np.uint8)).save(tmp_path / "data" / split / label / f"{i}.png")
    dataset = load_dataset(DataConfig(source=str(tmp_path / "data")), seed=0)
    test_values = set(range(1, 120, 8))
    assert {int(v) for v in _raw(dataset, "test")[:, 0, 0, 0]} == test_values  # all of them, in test
    for split in ("train", "val"):  # val is carved out of train
        assert not test_values & {int(v) for v in _raw(dataset, split)[:, 0, 0, 0]}
    assert len(dataset.y["train"]) + len(dataset.y["val"]) == 30 and dataset.split == "given by the source"
    assert dataset.labels == ["even", "odd"]


def test_a_predefined_npz_split_is_used_as_given(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"x_{s}": rng.integers(0, 255, (n, 4, 4)).astype(np.uint8) for s, n in (("train", 40), ("val", 10), ("test", 12))}
    arrays |= {f"y_{s}": np.arange(len(arrays[f"x_{s}"])) % 2 for s in ("train", "val", "test")}
    np.savez(tmp_path / "split.npz", **arrays)
    dataset = load_dataset(DataConfig(source=str(tmp_path / "split.npz")), seed=3)
    assert {s: len(dataset.y[s]) for s in ("train", "val", "test")} == {"train": 40, "val": 10, "test": 12}
    np.testing.assert_array_equal(_raw(dataset, "test")[:, 0], arrays["x_test"])  # the same samples, in order
    np.testing.assert_array_equal(dataset.y["test"], arrays["y_test"])
    np.savez(tmp_path / "no-test.npz", x_train=arrays["x_train"], y_train=arrays["y_train"], x=arrays["x_val"],
             y=arrays["y_val"])  # without x_test the arrays are not a split: x and y are read as usual
    assert load_dataset(DataConfig(source=str(tmp_path / "no-test.npz")), seed=0).split.startswith("random")


def test_16_bit_pngs_are_scaled_to_8_bits_not_clipped_white(tmp_path):
    from PIL import Image

    from edge_distill.data.samples import decode_image

    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    pixels = decode_image(tmp_path / "ramp.png", "grayscale")
    np.testing.assert_allclose(pixels, np.round(ramp / 257.0), atol=1)  # 65535 -> 255, not 255 from 255 up
    assert len(np.unique(pixels)) == 64 and decode_image(tmp_path / "ramp.png", "rgb").shape == (8, 8, 3)
