"""CIFAR loading on tiny files written in the real pickle layout, synthetic data, augmentation."""

import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from graphpai.errors import DataError  # noqa: E402
from graphpai.torch.data import (crop_flip, load_cifar, load_data, synthetic_batches,  # noqa: E402
                                 synthetic_data)


def write_cifar10(root, per_batch=4, test=6, seed=0):
    """The official layout: cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    written = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]  # the real files hold a list
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f)
        written[name] = (data, np.array(labels))
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072}, f)
    return folder, written


def write_cifar100(root, n=10, test=5, seed=1):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder)
    written = {}
    for name, count in (("train", n), ("test", test)):
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=count)]
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": fine,
                         b"coarse_labels": [v // 5 for v in fine]}, f)
        written[name] = (data, np.array(fine))
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump({b"fine_label_names": [b"f"] * 100}, f)
    return folder, written


def test_cifar10_loader_reads_the_pickle_layout(tmp_path):
    _, written = write_cifar10(tmp_path)
    data = load_cifar(tmp_path, val_fraction=0.2, seed=3)
    assert data.name == "cifar10" and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (16, 4, 6)
    pool = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    pool_labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    # image i, channel c, row r, column k is byte c*1024 + r*32 + k of its row ([CIFAR] layout)
    rows = {bytes(row): label for row, label in zip(pool, pool_labels)}
    seen = []
    for split in (data.train, data.val):
        for image, label in zip(split.images.numpy(), split.labels.numpy()):
            assert image.shape == (3, 32, 32) and image.dtype == np.uint8
            flat = np.concatenate([image[c].ravel() for c in range(3)])
            assert rows[bytes(flat)] == label
            seen.append(bytes(flat))
    assert sorted(seen) == sorted(rows)  # train and validation partition the training files
    test_images, test_labels = written["test_batch"]
    assert np.array_equal(data.test.images.numpy().reshape(6, 3072), test_images)
    assert np.array_equal(data.test.labels.numpy(), test_labels)
    # statistics of the training split only, per channel, from float64 numpy
    train = data.train.images.numpy().astype(np.float64)
    assert np.allclose(data.train.mean.numpy(), train.mean(axis=(0, 2, 3)), rtol=1e-6)
    assert np.allclose(data.train.std.numpy(), train.std(axis=(0, 2, 3)), rtol=1e-6)
    assert data.test.mean is data.train.mean  # the test split is normalised with train stats
    x = data.train.normalize(data.train.images[:2])
    expected = (train[:2] - train.mean(axis=(0, 2, 3))[:, None, None]) / \
        train.std(axis=(0, 2, 3))[:, None, None]
    assert np.allclose(x.numpy(), expected, atol=1e-5)


def test_split_is_seeded(tmp_path):
    write_cifar10(tmp_path)
    a, b, c = (load_cifar(tmp_path, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    whole = load_cifar(tmp_path, val_fraction=0.0)
    assert whole.val is None and len(whole.train) == 20


def test_cifar100_and_the_folder_itself(tmp_path):
    folder, written = write_cifar100(tmp_path)
    for root in (tmp_path, folder):
        data = load_cifar(root, val_fraction=0.2)
        assert data.name == "cifar100" and data.num_classes == 100
        assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 5)
        assert sorted(np.concatenate([data.train.labels.numpy(), data.val.labels.numpy()])) == \
            sorted(written["train"][1])  # the fine labels, not the coarse ones


def one_line(exc):
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_directory_names_the_expected_files(tmp_path):
    with pytest.raises(DataError) as exc:
        load_cifar(tmp_path / "nowhere")
    text = one_line(exc)
    assert "does not exist" in text and "cifar-10-batches-py" in text
    assert "data_batch_1" in text and "test_batch" in text and "cifar-100-python" in text
    with pytest.raises(DataError, match="holds no CIFAR files"):
        load_cifar(tmp_path)


@pytest.mark.parametrize("damage, message", [
    ("not a pickle", "not a python-pickle CIFAR batch"),
    ("wrong shape", "must be uint8 of shape"),
    ("bad label", "must be 4 integers in 0..9"),
    ("no labels", "must hold a dict"),
    ("missing test", "is missing"),
    ("foreign object", "not a python-pickle CIFAR batch"),
])
def test_malformed_files_give_one_clear_error(tmp_path, damage, message):
    folder, _ = write_cifar10(tmp_path)
    target = os.path.join(folder, "data_batch_3")
    if damage == "missing test":
        os.remove(os.path.join(folder, "test_batch"))
    elif damage == "not a pickle":
        with open(target, "wb") as f:
            f.write(b"this is not a pickle")
    elif damage == "foreign object":  # a pickle that would call a function is refused, not run
        with open(target, "wb") as f:
            pickle.dump({b"data": os.getcwd}, f)
    else:
        data = np.zeros((4, 3072), np.uint8)
        batch = {b"data": data, b"labels": [0, 1, 2, 3]}
        if damage == "wrong shape":
            batch[b"data"] = np.zeros((4, 100), np.uint8)
        elif damage == "bad label":
            batch[b"labels"] = [0, 1, 2, 10]
        else:
            del batch[b"labels"]
        with open(target, "wb") as f:
            pickle.dump(batch, f)
    with pytest.raises(DataError) as exc:
        load_cifar(tmp_path)
    assert message in one_line(exc)


def test_load_data_checks_the_model(tmp_path):
    write_cifar10(tmp_path)
    assert load_data(str(tmp_path), num_classes=10, input_shape=(3, 32, 32)).num_classes == 10
    with pytest.raises(DataError, match="has 10 classes but the model has 100"):
        load_data(str(tmp_path), num_classes=100)
    with pytest.raises(DataError, match=r"shape \(3, 32, 32\) but the model expects"):
        load_data(str(tmp_path), input_shape=(1, 28, 28))
    synthetic = load_data("synthetic", num_classes=3, input_shape=(2, 6, 6))
    assert synthetic.num_classes == 3 and synthetic.input_shape == (2, 6, 6)


def test_prune_batches_are_training_images(tmp_path):
    write_cifar10(tmp_path, per_batch=30)
    data = load_cifar(tmp_path)
    batches = data.train.prune_batches(batch_size=64, seed=5)
    assert [len(y) for _, y in batches] == [64, 36]  # 10 x 10 classes images
    x = torch.cat([b[0] for b in batches])
    raw = x * data.train.std.view(1, 3, 1, 1) + data.train.mean.view(1, 3, 1, 1)
    pool = {bytes(img.numpy().ravel()) for img in data.train.images}
    assert all(bytes(np.rint(r.numpy()).astype(np.uint8).ravel()) in pool for r in raw)
    assert len({bytes(np.rint(r.numpy()).astype(np.uint8).ravel()) for r in raw}) == 100
    again = data.train.prune_batches(batch_size=64, seed=5)
    assert torch.equal(again[0][0], batches[0][0])
    with pytest.raises(DataError, match="need 1000 images"):
        data.train.prune_batches(images_per_class=100)


def test_synthetic_data_is_balanced_seeded_and_learnable_by_colour():
    data = synthetic_data(5, (3, 6, 6), train_size=500, test_size=100, seed=2)
    assert (len(data.train), len(data.val), len(data.test)) == (400, 100, 100)
    labels = np.concatenate([data.train.labels.numpy(), data.val.labels.numpy()])
    assert np.array_equal(np.bincount(labels), [100] * 5)
    assert torch.equal(synthetic_data(5, (3, 6, 6), train_size=500, seed=2).train.images,
                       data.train.images)
    assert not torch.equal(synthetic_data(5, (3, 6, 6), train_size=500, seed=3).train.images,
                           data.train.images)
    # nearest class-mean colour classifies the test split far above chance (0.2)
    colour = data.train.images.mean(dim=(2, 3))
    centres = torch.stack([colour[data.train.labels == k].mean(0) for k in range(5)])
    test_colour = data.test.images.mean(dim=(2, 3))
    guess = torch.cdist(test_colour, centres).argmin(1)
    assert (guess == data.test.labels).float().mean() > 0.8
    with pytest.raises(DataError, match="synthetic_data needs"):
        synthetic_data(0)


def crop_flip_loop(images, top, left, flip, padding):
    """Per-image oracle: pad, slice, flip."""
    out = []
    h, w = images.shape[2:]
    for image, t, l, f in zip(images, top.tolist(), left.tolist(), flip.tolist()):
        padded = F.pad(image, (padding,) * 4)
        crop = padded[:, t:t + h, l:l + w]
        out.append(crop.flip(2) if f else crop)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_matches_a_per_image_loop(dtype):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (9, 3, 7, 5), generator=g).to(dtype)
    for padding in (0, 1, 4):
        top = torch.randint(0, 2 * padding + 1, (9,), generator=g)
        left = torch.randint(0, 2 * padding + 1, (9,), generator=g)
        flip = torch.randint(0, 2, (9,), generator=g).bool()
        got = crop_flip(images, top, left, flip, padding)
        assert got.dtype == dtype and got.shape == images.shape
        assert torch.equal(got, crop_flip_loop(images, top, left, flip, padding))
    centre = torch.full((9,), 4)
    assert torch.equal(crop_flip(images, centre, centre, torch.zeros(9, dtype=torch.bool), 4),
                       images)


def test_synthetic_batches_unchanged():
    a = synthetic_batches((3, 4, 4), num_classes=2, num_batches=2, seed=1)
    rng = np.random.default_rng(1)
    assert np.array_equal(a[0][0].numpy(), rng.standard_normal((20, 3, 4, 4), dtype=np.float32))
    assert np.array_equal(a[0][1].numpy(), rng.integers(0, 2, size=20, dtype=np.int64))
