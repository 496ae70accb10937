"""Domains: shapes, ranges and labels; glyph determinism; file formats read back exactly; clear errors."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from huscf_lightning.data import DomainData, DomainError, clear_domain_cache, known_domains, load_domain, read_idx
from huscf_lightning.data.glyphs import GLYPH_FONTS, render_glyph_templates
from huscf_lightning.data.loaders import FASHION_MNIST_DEBIAN_ROOT, load_glyphs


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (gzipped if the name ends in .gz): magic 00 00 08 ndim, dims."""
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def write_mnist_folder(folder: Path, rng: np.random.Generator, gz: bool, train: int = 12, test: int = 5) -> dict:
    """Tiny MNIST-format files in ``folder``; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(folder / (f"{stem}.gz" if gz else stem), array)
    return arrays


def assert_images_equal_pixels(images: torch.Tensor, pixels: np.ndarray) -> None:
    expected = torch.from_numpy(pixels.astype(np.float32)).reshape(-1, 1, 28, 28) / 127.5 - 1.0
    torch.testing.assert_close(images, expected)


@pytest.mark.parametrize(("name", "train", "test"), [("mnist5k", 4000, 1000), ("digits", 1437, 360), ("glyphs", 6000, 1000)])
def test_offline_domain_shapes_ranges_and_balanced_labels(name: str, train: int, test: int) -> None:
    data = load_domain(name)
    assert data.name == name and data.num_classes == 10
    for images, labels, count in ((data.train_images, data.train_labels, train), (data.test_images, data.test_labels, test)):
        assert images.shape == (count, 1, 28, 28) and images.dtype == torch.float32
        assert labels.shape == (count,) and labels.dtype == torch.int64
        assert images.min() == -1.0 and images.max() <= 1.0 and images.max() > 0.9
        counts = torch.bincount(labels, minlength=10)
        assert len(counts) == 10 and counts.min() > 0
        assert counts.max() - counts.min() <= max(2, count // 100)  # stratified / balanced


def test_mnist5k_split_is_stratified_and_disjoint() -> None:
    data = load_domain("mnist5k")
    assert torch.bincount(data.train_labels).tolist() == [400] * 10
    assert torch.bincount(data.test_labels).tolist() == [100] * 10
    train_keys = {image.numpy().tobytes() for image in data.train_images}
    assert len(train_keys) == 4000
    assert not train_keys & {image.numpy().tobytes() for image in data.test_images}


def test_digits_are_upsampled_into_the_mnist_frame() -> None:
    from sklearn.datasets import load_digits

    data = load_domain("digits")
    images = torch.cat([data.train_images, data.test_images])
    border = torch.ones(28, 28, dtype=torch.bool)
    border[4:24, 4:24] = False
    assert (images[:, 0, border] == -1.0).all()
    inner_mean = ((images[:, 0, 4:24, 4:24] + 1) / 2).mean().item()
    assert inner_mean == pytest.approx(load_digits().images.mean() / 16.0, abs=0.02)


def test_cache_returns_the_same_object_and_seed_changes_the_split() -> None:
    assert load_domain("digits", seed=0) is load_domain("digits", seed=0)
    other = load_domain("digits", seed=1)
    assert other is not load_domain("digits", seed=0)
    assert not torch.equal(other.test_images, load_domain("digits", seed=0).test_images)


def test_glyph_templates_cover_every_font_and_letter() -> None:
    templates = render_glyph_templates()
    assert templates.shape == (len(GLYPH_FONTS), 10, 28, 28)
    ink = templates.flatten(2).amax(2)
    assert (ink > 0.5).all()
    assert templates[:, :, :4].abs().max() == 0 and templates[:, :, 24:].abs().max() == 0
    letter_means = templates.mean(0).flatten(1)
    assert torch.cdist(letter_means, letter_means).fill_diagonal_(1.0).min() > 0.5  # letters differ


def test_glyphs_are_deterministic_for_a_seed_and_differ_across_seeds() -> None:
    first = load_glyphs(seed=5, train_per_class=20, test_per_class=4)
    again = load_glyphs(seed=5, train_per_class=20, test_per_class=4)
    other = load_glyphs(seed=6, train_per_class=20, test_per_class=4)
    assert torch.equal(first.train_images, again.train_images) and torch.equal(first.test_images, again.test_images)
    assert not torch.equal(first.train_images, other.train_images)
    assert torch.bincount(first.train_labels).tolist() == [20] * 10
    assert torch.bincount(first.test_labels).tolist() == [4] * 10
    assert first.train_images.min() >= -1 and first.train_images.max() <= 1


def test_glyph_jitter_options_reach_the_images() -> None:
    still = load_glyphs(0, 3, 1, max_rotation=0, scale_range=(1, 1), max_shear=0, max_shift=0, max_stroke=0, stroke_noise=0)
    moved = load_glyphs(0, 3, 1)
    templates = render_glyph_templates() * 2 - 1
    # Without jitter every image is exactly one of its letter's templates.
    for image, label in zip(still.train_images, still.train_labels):
        assert (templates[:, label] - image[0]).abs().flatten(1).amax(1).min() < 1e-5
    assert not torch.equal(still.train_images, moved.train_images)


def test_read_idx_round_trips_gz_and_plain(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b", array)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array)
    assert np.array_equal(read_idx(tmp_path / "b"), array)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]))
    with pytest.raises(DomainError, match="unsigned-byte IDX"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(DomainError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(bytes([0, 0, 0x08, 3, 0, 0]))  # 3 dimensions announced, no sizes
    with pytest.raises(DomainError, match="truncated inside its header"):
        read_idx(tmp_path / "header")


def test_fashion_mnist_reads_idx_files_from_root(tmp_path: Path) -> None:
    arrays = write_mnist_folder(tmp_path, np.random.default_rng(0), gz=True)
    data = load_domain("fashion_mnist", root=str(tmp_path))
    assert_images_equal_pixels(data.train_images, arrays["train-images-idx3-ubyte"])
    assert_images_equal_pixels(data.test_images, arrays["t10k-images-idx3-ubyte"])
    assert data.train_labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.test_labels.dtype == torch.int64


def test_fashion_mnist_missing_folder_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DomainError) as error:
        load_domain("fashion_mnist", root=str(missing))
    message = str(error.value)
    assert str(missing / "train-images-idx3-ubyte") in message
    assert "apt-get install dataset-fashion-mnist" in message and "root:" in message


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DEBIAN_ROOT, "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({FASHION_MNIST_DEBIAN_ROOT} is missing); "
    "`apt-get install dataset-fashion-mnist` to run this test",
)
def test_debian_fashion_mnist_is_the_full_dataset() -> None:
    data = load_domain("fashion_mnist")
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert data.train_images.min() == -1.0 and data.train_images.max() == 1.0


def test_mnist_reads_a_torchvision_layout_folder(tmp_path: Path) -> None:
    arrays = write_mnist_folder(tmp_path / "MNIST" / "raw", np.random.default_rng(1), gz=False)
    data = load_domain("mnist", root=str(tmp_path))
    assert_images_equal_pixels(data.train_images, arrays["train-images-idx3-ubyte"])
    assert data.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_kmnist_missing_names_folder_and_download_option(tmp_path: Path) -> None:
    with pytest.raises(DomainError) as error:
        load_domain("kmnist", root=str(tmp_path))
    assert str(tmp_path / "KMNIST" / "raw") in str(error.value) and "download: true" in str(error.value)


def test_notmnist_reads_uint8_with_test_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    test_images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels, test_labels = torch.arange(20) % 10, torch.arange(6) % 10
    path = tmp_path / "notmnist.pt"
    torch.save({"images": torch.from_numpy(images), "labels": labels, "test_images": torch.from_numpy(test_images), "test_labels": test_labels}, path)
    data = load_domain("notmnist", root=str(tmp_path))  # a folder holding notmnist.pt
    assert_images_equal_pixels(data.train_images, images)
    assert_images_equal_pixels(data.test_images, test_images)
    assert torch.equal(data.train_labels, labels)


def test_notmnist_float_images_without_test_set_are_split_by_seed(tmp_path: Path) -> None:
    images = torch.rand(40, 1, 28, 28)
    path = tmp_path / "letters.pt"
    torch.save({"images": images, "labels": torch.arange(40) % 10}, path)
    data = load_domain("notmnist", root=str(path), options={"test_size": 0.25})
    assert len(data.train_labels) == 30 and torch.bincount(data.test_labels).tolist() == [1] * 10
    assert data.train_images.min() >= -1 and data.train_images.max() <= 1
    all_pixels = torch.cat([data.train_images, data.test_images]).flatten(1).sum(1).sort().values
    torch.testing.assert_close(all_pixels, (images * 2 - 1).flatten(1).sum(1).sort().values)


def test_notmnist_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DomainError, match="not found"):
        load_domain("notmnist", root=str(tmp_path / "missing.pt"))
    torch.save({"images": torch.full((4, 28, 28), 3.0), "labels": torch.zeros(4, dtype=torch.long)}, tmp_path / "range.pt")
    with pytest.raises(DomainError, match=r"\[0, 1\]"):
        load_domain("notmnist", root=str(tmp_path / "range.pt"))
    torch.save({"images": torch.zeros(4, 32, 32, dtype=torch.uint8), "labels": torch.zeros(4, dtype=torch.long)}, tmp_path / "shape.pt")
    with pytest.raises(DomainError, match="shape"):
        load_domain("notmnist", root=str(tmp_path / "shape.pt"))
    torch.save({"pixels": torch.zeros(4, 28, 28)}, tmp_path / "keys.pt")
    with pytest.raises(DomainError, match="'images' and 'labels'"):
        load_domain("notmnist", root=str(tmp_path / "keys.pt"))
    (tmp_path / "corrupt.pt").write_bytes((tmp_path / "keys.pt").read_bytes()[:100])
    with pytest.raises(DomainError, match="cannot be read"):
        load_domain("notmnist", root=str(tmp_path / "corrupt.pt"))


def test_unknown_domain_lists_known_names() -> None:
    with pytest.raises(DomainError) as error:
        load_domain("cifar")
    for name in ("mnist5k", "digits", "glyphs", "fashion_mnist", "mnist", "kmnist", "notmnist"):
        assert name in known_domains() and name in str(error.value)


def test_bad_options_and_root_are_clear_errors() -> None:
    with pytest.raises(DomainError, match="unknown option"):
        load_domain("glyphs", options={"letters": 26})
    with pytest.raises(DomainError, match="takes no root"):
        load_domain("mnist5k", root="/tmp")
    with pytest.raises(DomainError, match="`root:` field"):
        load_domain("fashion_mnist", options={"root": "/tmp"})


def write_test_only_folder(raw: Path, per_class: int, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A torchvision raw folder holding only the t10k pair: ``per_class`` random images per label, shuffled."""
    rng = np.random.default_rng(7)
    raw.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
    pixels = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", pixels)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", labels)
    return pixels, labels


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_a_test_only_folder_is_split_seeded_stratified_and_disjoint(tmp_path: Path, name: str, caplog) -> None:
    pixels, _ = write_test_only_folder(tmp_path / name.upper() / "raw", per_class=20)
    with caplog.at_level("WARNING", logger="huscf_lightning.data.mnist_folder"):
        data = load_domain(name, root=str(tmp_path), seed=3, options={"held_out": 50})
    assert len(data.train_labels) == 150 and len(data.test_labels) == 50
    assert torch.bincount(data.train_labels).tolist() == [15] * 10 and torch.bincount(data.test_labels).tolist() == [5] * 10
    assert "official test set" in caplog.text and "150 train / 50 held-out" in data.source
    # Train and held-out together are the file's images, each once: disjoint and complete.
    together = ((torch.cat([data.train_images, data.test_images]) + 1) * 127.5).round().to(torch.uint8)
    assert sorted(image.numpy().tobytes() for image in together) == sorted(image.tobytes() for image in pixels)
    again = load_domain(name, root=str(tmp_path), seed=3, options={"held_out": 50})
    assert again is data  # cached
    clear_domain_cache()
    fresh = load_domain(name, root=str(tmp_path), seed=3, options={"held_out": 50})
    assert fresh is not data and torch.equal(fresh.train_images, data.train_images)
    assert torch.equal(fresh.test_labels, data.test_labels)
    other = load_domain(name, root=str(tmp_path), seed=4, options={"held_out": 50})
    assert not torch.equal(other.train_images, data.train_images)


def test_decoded_files_are_kept_until_the_cache_is_cleared(tmp_path: Path) -> None:
    """Another seed only re-splits: a file rewritten with the same size and time is not read again."""
    write_test_only_folder(tmp_path / "MNIST" / "raw", per_class=5, gz=False)
    first = load_domain("mnist", root=str(tmp_path), seed=0, options={"held_out": 10})
    images = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    stat = images.stat()
    raw = bytearray(images.read_bytes())
    raw[16:] = bytes(len(raw) - 16)  # every pixel 0, same size
    images.write_bytes(bytes(raw))
    os.utime(images, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other_seed = load_domain("mnist", root=str(tmp_path), seed=1, options={"held_out": 10})
    assert pixel_set(other_seed) == pixel_set(first) and other_seed.train_images.max() > -1
    clear_domain_cache()
    reread = load_domain("mnist", root=str(tmp_path), seed=1, options={"held_out": 10})
    assert reread.train_images.max() == -1 and reread.test_images.max() == -1


def pixel_set(data: DomainData) -> list[bytes]:
    return sorted(image.numpy().tobytes() for image in torch.cat([data.train_images, data.test_images]))


def test_a_test_only_folder_too_small_for_the_held_out_part_names_the_option(tmp_path: Path) -> None:
    write_test_only_folder(tmp_path / "MNIST" / "raw", per_class=3, gz=False)
    with pytest.raises(DomainError, match=r"held_out=2000 cannot split the 30 test images") as error:
        load_domain("mnist", root=str(tmp_path))
    assert "options: {held_out: ...}" in str(error.value)


def test_a_full_folder_keeps_the_official_split_and_a_missing_test_file_is_named(tmp_path: Path) -> None:
    arrays = write_mnist_folder(tmp_path / "KMNIST" / "raw", np.random.default_rng(3), gz=True)
    data = load_domain("kmnist", root=str(tmp_path))
    assert data.source == "" and data.train_labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert_images_equal_pixels(data.test_images, arrays["t10k-images-idx3-ubyte"])
    (tmp_path / "KMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    clear_domain_cache()
    with pytest.raises(DomainError, match="t10k-labels-idx1-ubyte"):
        load_domain("kmnist", root=str(tmp_path))


def test_a_missing_mnist_folder_names_it_and_every_way_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DomainError) as error:
        load_domain("mnist", root=str(tmp_path / "nowhere"))
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") + " does not exist" in message
    assert "download: true" in message and "../shared/data" in message and "\n" not in message


def assert_one_paragraph_naming(error: pytest.ExceptionInfo, path: Path, *expected: str) -> None:
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    for text in expected:
        assert text in message, message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"images,labels\n1,2\n", "is not a torch.save file"),
        (b"", "is empty (0 bytes)"),
        (bytes(range(256)) * 4, "is not a torch.save file"),
        (b"\x80\x02" + bytes(range(100)), "cannot be read as a torch.save file"),
    ],
    ids=["text", "empty", "binary", "bad-pickle"],
)
def test_a_notmnist_file_that_is_not_a_torch_file_is_one_clear_paragraph(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "notmnist.pt"
    path.write_bytes(content)
    with pytest.raises(DomainError) as error:
        load_domain("notmnist", root=str(path))
    assert_one_paragraph_naming(error, path, expected, "'images': uint8 (N, 28, 28)")


def test_a_notmnist_file_with_wrong_content_names_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "keys.pt"
    torch.save({"x": torch.zeros(2, 28, 28), "y": torch.zeros(2)}, path)
    with pytest.raises(DomainError) as error:
        load_domain("notmnist", root=str(path))
    assert_one_paragraph_naming(error, path, "a dict with keys ['x', 'y']", "keys 'images' and 'labels'")
    torch.save(torch.zeros(3), path)
    clear_domain_cache()
    with pytest.raises(DomainError) as error:
        load_domain("notmnist", root=str(path))
    assert_one_paragraph_naming(error, path, "holds Tensor")
    torch.save({"images": torch.zeros(2, 28, 28, dtype=torch.uint8), "labels": torch.tensor([0, 12])}, path)
    with pytest.raises(DomainError) as error:
        load_domain("notmnist", root=str(path), seed=1)
    assert_one_paragraph_naming(error, path, "outside 0..9", "num_classes")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty", b"", "starts with nothing (the file is empty)"),
        ("text", b"0,1,2\n", "magic bytes 00 00 08"),
        ("floats", bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4), "starts with 00 00 0d 01"),
        ("short", bytes([0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2]), "truncated or corrupt"),
        ("text.gz", b"not gzip at all", "not a readable gzip archive"),
    ],
)
def test_a_broken_idx_file_is_one_clear_paragraph(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DomainError) as error:
        read_idx(path)
    assert_one_paragraph_naming(error, path, expected)


def test_a_truncated_gzip_idx_file_and_a_wrong_shape_in_a_domain_folder_are_clear(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path, np.random.default_rng(4), gz=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-20])
    with pytest.raises(DomainError) as error:
        load_domain("fashion_mnist", root=str(tmp_path))
    assert_one_paragraph_naming(error, images, "not a readable gzip archive", "download or copy it again")
    write_idx(images, np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(DomainError) as error:
        load_domain("fashion_mnist", root=str(tmp_path))
    assert_one_paragraph_naming(error, images, "not 28x28 images")
    write_idx(images, np.zeros((5, 28, 28), dtype=np.uint8))  # the labels file holds 12
    with pytest.raises(DomainError) as error:
        load_domain("fashion_mnist", root=str(tmp_path))
    assert_one_paragraph_naming(error, images, "one label per image")
