"""The loaders read the standard files from DATA_DIR, a directory, a path or a URL,
check them, and report every problem as one DataError line."""

from __future__ import annotations

import pickle
import shutil
import tarfile

import numpy as np
import pytest

from swarm.data import (DataError, load_cifar10, load_cifar100, load_dataset, load_digits,
                        load_mnist, sha256_of)

LOADERS = {"cifar10": load_cifar10, "cifar100": load_cifar100, "mnist": load_mnist}


def _plain_cifar_batches(tarball, names):
    """The pickled dicts of a CIFAR tarball, read without the loader (trusted test files)."""
    with tarfile.open(tarball) as tar:
        folder = tar.getnames()[0]
        return [pickle.loads(tar.extractfile(f"{folder}/{name}").read(), encoding="bytes")
                for name in names]


def test_cifar10_images_are_nhwc_planes_of_the_rows(files, sizes):
    n_train, n_test = sizes
    dataset = load_cifar10(files["cifar10"])
    assert dataset.name == "cifar10" and len(dataset.classes) == 10
    assert dataset.train_x.shape == (n_train, 32, 32, 3) and dataset.train_x.dtype == np.uint8
    assert dataset.test_x.shape == (n_test, 32, 32, 3)
    assert dataset.train_y.dtype == dataset.test_y.dtype == np.int64
    batches = _plain_cifar_batches(files["cifar10"], [f"data_batch_{i}" for i in range(1, 6)])
    rows = np.concatenate([batch[b"data"] for batch in batches])
    labels = np.concatenate([batch[b"labels"] for batch in batches])
    # pixel (row r, column c, channel ch) is at ch*1024 + r*32 + c of its row
    for image, r, c, ch in ((0, 0, 0, 0), (7, 5, 31, 1), (n_train - 1, 31, 2, 2)):
        assert dataset.train_x[image, r, c, ch] == rows[image, ch * 1024 + r * 32 + c]
    np.testing.assert_array_equal(dataset.train_y, labels)


def test_cifar100_fine_and_coarse_labels(files, sizes):
    n_train, n_test = sizes
    fine = load_cifar100(files["cifar100"])
    coarse = load_cifar100(files["cifar100"], label_mode="coarse")
    assert fine.train_x.shape == (n_train, 32, 32, 3) and fine.test_x.shape == (n_test, 32, 32, 3)
    assert len(fine.classes) == 100 and len(coarse.classes) == 20
    (train,) = _plain_cifar_batches(files["cifar100"], ["train"])
    np.testing.assert_array_equal(fine.train_y, train[b"fine_labels"])
    np.testing.assert_array_equal(coarse.train_y, train[b"coarse_labels"])
    np.testing.assert_array_equal(fine.train_x, coarse.train_x)
    with pytest.raises(DataError, match="label_mode must be 'fine' or 'coarse'"):
        load_cifar100(files["cifar100"], label_mode="medium")


def test_mnist_arrays(files, sizes):
    n_train = sizes[0]
    dataset = load_mnist(files["mnist"])
    with np.load(files["mnist"]) as npz:
        np.testing.assert_array_equal(dataset.train_x, npz["x_train"])
        np.testing.assert_array_equal(dataset.test_y, npz["y_test"])
    assert dataset.train_x.shape == (n_train, 28, 28) and dataset.train_x.dtype == np.uint8
    assert dataset.train_y.dtype == np.int64 and dataset.classes == [str(d) for d in range(10)]


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_from_data_dir_a_directory_a_path_and_a_file_url(files, monkeypatch, name):
    expected = LOADERS[name](files[name])
    monkeypatch.setenv("DATA_DIR", str(files[name].parent))
    for source in (None, files[name].parent, str(files[name]), files[name].as_uri()):
        dataset = LOADERS[name](source)
        np.testing.assert_array_equal(dataset.train_x, expected.train_x)
        np.testing.assert_array_equal(dataset.test_y, expected.test_y)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_from_http_into_a_scratch_dir_removed_afterwards(files, serve, tmp_path, name):
    base = serve(files[name].parent)
    scratch = tmp_path / "scratch"
    dataset = LOADERS[name](f"{base}/{files[name].name}", sha256=sha256_of(files[name]),
                            scratch=scratch)
    np.testing.assert_array_equal(dataset.train_y, LOADERS[name](files[name]).train_y)
    assert dataset.scratch_dir is None and list(scratch.iterdir()) == []


def test_a_missing_url_is_one_error(files, serve):
    base = serve(files["mnist"].parent)
    with pytest.raises(DataError, match=r"^mnist: could not download .*/nothing\.npz: HTTP 404"):
        load_mnist(f"{base}/nothing.npz")


def test_an_extracted_folder_is_read_in_place(files, tmp_path):
    with tarfile.open(files["cifar10"]) as tar:
        tar.extractall(tmp_path, filter="data")
    expected = load_cifar10(files["cifar10"])
    for source in (tmp_path, tmp_path / "cifar-10-batches-py"):
        np.testing.assert_array_equal(load_cifar10(source).train_x, expected.train_x)
    with pytest.raises(DataError, match="is an extracted folder; the checksum applies to "
                                        "cifar-10-python.tar.gz"):
        load_cifar10(tmp_path, sha256="0" * 64)


def test_scratch_dir_is_removed_unless_kept(files, tmp_path):
    scratch = tmp_path / "scratch"
    assert load_cifar10(files["cifar10"], scratch=scratch).scratch_dir is None
    assert list(scratch.iterdir()) == []
    kept = load_cifar10(files["cifar10"], keep=True, scratch=scratch).scratch_dir
    assert kept is not None and kept.parent == scratch
    assert (kept / "cifar-10-batches-py" / "data_batch_1").is_file()


def test_missing_file_names_what_is_expected_where(tmp_path, monkeypatch, no_data_dir):
    with pytest.raises(DataError) as unset:
        load_cifar10()
    assert str(unset.value) == ("cifar10: expected cifar-10-python.tar.gz in $DATA_DIR, but "
                                "DATA_DIR is not set; set it to the folder holding the file, "
                                "or pass a path or URL")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as empty:
        load_cifar10()
    assert str(empty.value) == (f"cifar10: expected cifar-10-python.tar.gz in {tmp_path} "
                                "(DATA_DIR); put the file there, or pass a path or URL")
    with pytest.raises(DataError, match=r"^cifar100: expected cifar-100-python\.tar\.gz in .*/nowhere "
                                        r"\(DATA_DIR, which does not exist\)"):
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "nowhere"))
        load_cifar100()
    with pytest.raises(DataError, match=r"^mnist: expected mnist\.npz at .*/gone\.npz, but there "
                                        "is no such file or directory"):
        load_mnist(tmp_path / "gone.npz")
    with pytest.raises(DataError, match="only file://, http:// and https:// URLs"):
        load_mnist("ftp://example.org/mnist.npz")


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_wrong_checksum_names_the_file(files, name):
    with pytest.raises(DataError, match=rf"^{name}: wrong checksum for .*{files[name].name}: "
                                        rf"SHA-256 is {sha256_of(files[name])}, expected 0{{64}}"):
        LOADERS[name](files[name], sha256="0" * 64)
    with pytest.raises(DataError, match="is not 64 hex digits"):
        LOADERS[name](files[name], sha256="abc")
    assert LOADERS[name](files[name], sha256=sha256_of(files[name]).upper()).train_y.size


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_truncated_file_is_one_clear_error(files, tmp_path, name):
    cut = tmp_path / files[name].name
    cut.write_bytes(files[name].read_bytes()[: files[name].stat().st_size // 2])
    scratch = tmp_path / "scratch"
    with pytest.raises(DataError, match=rf"^{name}: {cut} is truncated or corrupt") as error:
        LOADERS[name](cut, scratch=scratch)
    assert "\n" not in str(error.value)
    # no tarfile/zip traceback chained to it
    assert error.value.__context__ is None or error.value.__suppress_context__
    assert not scratch.exists() or list(scratch.iterdir()) == []


def test_an_archive_without_a_batch_names_it(files, tmp_path):
    folder = tmp_path / "unpacked"
    with tarfile.open(files["cifar10"]) as tar:
        tar.extractall(folder, filter="data")
    (folder / "cifar-10-batches-py" / "data_batch_3").unlink()
    partial = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(folder / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_3 is missing from"):
        load_cifar10(partial)


def test_a_pickle_naming_other_code_is_refused(files, tmp_path):
    folder = tmp_path / "unpacked" / "cifar-10-batches-py"
    shutil.copytree(load_cifar10(files["cifar10"], keep=True, scratch=tmp_path / "s")
                    .scratch_dir / "cifar-10-batches-py", folder)

    class Sneaky:
        def __reduce__(self):
            return (shutil.rmtree, (str(folder),))  # what a hostile file could ask for

    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": Sneaky()}))
    with pytest.raises(DataError, match=r"batches\.meta .* asks to load shutil\.rmtree, which data "
                                        r"files never need; refusing"):
        load_cifar10(folder)
    assert folder.is_dir()


def test_python2_style_pickles_with_numpy_1_names_load(files, tmp_path):
    """The real files are Python 2 protocol-2 pickles naming numpy.core.multiarray."""
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(load_cifar10(files["cifar10"], keep=True, scratch=tmp_path / "s")
                    .scratch_dir / "cifar-10-batches-py", folder)
    for path in folder.iterdir():
        content = pickle.loads(path.read_bytes(), encoding="bytes")
        legacy = pickle.dumps(content, protocol=2).replace(b"cnumpy._core.multiarray\n",
                                                           b"cnumpy.core.multiarray\n")
        path.write_bytes(legacy)
    assert b"cnumpy.core.multiarray\n" in (folder / "test_batch").read_bytes()
    np.testing.assert_array_equal(load_cifar10(folder).test_x, load_cifar10(files["cifar10"]).test_x)


def test_mnist_rejects_pickled_objects_and_missing_keys(tmp_path):
    np.savez(tmp_path / "objects.npz", x_train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="truncated or corrupt, or not an .npz file"):
        load_mnist(tmp_path / "objects.npz")
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="has no y_train, x_test, y_test"):
        load_mnist(tmp_path / "partial.npz")


def test_load_digits_is_scaled_shuffled_and_split():
    dataset = load_digits(test_size=300, seed=3)
    assert dataset.train_x.shape == (1797 - 300, 64) and dataset.test_x.shape == (300, 64)
    assert dataset.train_x.dtype == np.float32 and dataset.train_y.dtype == np.int64
    assert 0.0 == dataset.train_x.min() and dataset.train_x.max() == 1.0
    again, other = load_digits(test_size=300, seed=3), load_digits(test_size=300, seed=4)
    np.testing.assert_array_equal(dataset.test_y, again.test_y)
    assert not np.array_equal(dataset.test_y, other.test_y)
    assert load_dataset("digits").test_x.shape == (400, 64)
