"""Image data for training and for the data-driven pruning methods (docs/training.md).

- :func:`load_cifar`: CIFAR-10/100 from a local directory in the standard python-pickle layout
  (``cifar-10-batches-py/data_batch_1..5, test_batch``; ``cifar-100-python/train, test``), with the
  seeded train/validation split of [MiCA] (80/20 by default) and per-channel statistics of the
  training split. No torchvision and no download: the directory must already hold the files.
- :func:`synthetic_data`: learnable class-dependent images of any size and class count, for tests
  and demos, in the same :class:`DataSplits` form.
- :func:`crop_flip`: the CIFAR augmentation (random crop after zero padding, random horizontal
  flip) as one batched gather on whatever device the images are on: no per-image Python.
- :meth:`ImageSet.prune_batches`: SNIP/GraSP prune batches, 10 x classes training images ([SF]).
- :func:`synthetic_batches`: random-noise batches for SNIP/GraSP demos without any data set.

Images are kept in their raw units (uint8 0..255 for CIFAR) and normalised per batch with the
training split's per-channel mean and standard deviation, so a whole split fits on a GPU (CIFAR-10's
training split is 123 MB as uint8) and zero padding is black, as in the papers' torchvision pipeline.

References
----------
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024.
.. [SF] H. Tanaka, D. Kunin, D. Yamins, S. Ganguli, "Pruning neural networks without any data by
   iteratively conserving synaptic flow", NeurIPS 2020.
.. [CIFAR] A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

__all__ = ["ImageSet", "DataSplits", "load_cifar", "synthetic_data", "load_data", "crop_flip",
           "synthetic_batches", "CIFAR_LAYOUTS"]

#: dataset -> (folder, training files, test file, label key, classes)
CIFAR_LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                b"labels", 10),
    "cifar100": ("cifar-100-python", ("train",), "test", b"fine_labels", 100),
}


@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split: images in raw units, labels, and the normalisation of the training split.

    Attributes
    ----------
    images : torch.Tensor, shape (n, C, H, W)
        uint8 (CIFAR) or float32 (synthetic), unnormalised.
    labels : torch.Tensor, shape (n,), int64
    num_classes : int
    mean, std : torch.Tensor, shape (C,), float32
        Per-channel statistics of the training split, in the images' units.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: torch.Tensor
    std: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> "ImageSet":
        """This split on `device` (self if already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return ImageSet(self.images.to(device), self.labels.to(device), self.num_classes,
                        self.mean.to(device), self.std.to(device))

    def subset(self, index) -> "ImageSet":
        """The images at `index` (an index tensor or array) with the same normalisation."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long, device=self.images.device)
        return ImageSet(self.images[index], self.labels[index], self.num_classes, self.mean,
                        self.std)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """float32 ``(images - mean) / std`` per channel."""
        shape = (1, -1) + (1,) * (images.dim() - 2)
        return (images.float() - self.mean.view(shape)) / self.std.view(shape)

    def prune_batches(self, *, images_per_class: int = 10, batch_size: int = 256, seed=0):
        """SNIP/GraSP prune batches: ``images_per_class x num_classes`` random images of this split.

        Drawn without replacement (seeded, numpy), normalised, without augmentation, on the CPU;
        batches of `batch_size` (the last one smaller), as the [SF] code's prune loader.

        Returns
        -------
        list of (float32 tensor (b, C, H, W), int64 tensor (b,))
        """
        count = int(images_per_class) * self.num_classes
        if count < 1 or int(batch_size) < 1:
            raise DataError(f"prune batches need positive sizes: images_per_class="
                            f"{images_per_class!r}, batch_size={batch_size!r}")
        if count > len(self):
            raise DataError(f"prune batches need {count} images ({images_per_class} x "
                            f"{self.num_classes} classes) but the split holds {len(self)}")
        index = np.random.default_rng(seed).permutation(len(self))[:count]
        part = self.to("cpu").subset(index)
        x, y = part.normalize(part.images), part.labels
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, count, batch_size)]


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Training, validation (None without a split) and test :class:`ImageSet` of one data set."""

    name: str
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.input_shape

    def __repr__(self):
        sizes = ", ".join(f"{k} {len(getattr(self, k))}" for k in ("train", "val", "test")
                          if getattr(self, k) is not None)
        return (f"DataSplits({self.name!r}, {self.num_classes} classes, "
                f"{'x'.join(map(str, self.input_shape))}: {sizes})")


# ------------------------------------------------------------------------------ CIFAR
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts, lists, bytes, numpy arrays) and nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR batch file")


def _read_batch(path: str, label_key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"CIFAR file {path!r} is missing") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a malformed file
        raise DataError(f"CIFAR file {path!r} is not a python-pickle CIFAR batch ({exc}); "
                        "download the 'python version' of the data set again") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"CIFAR file {path!r} must hold a dict with b'data' and {label_key!r}; "
                        f"found {keys}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR file {path!r}: b'data' must be uint8 of shape (n, 3072), got "
                        f"{data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer) \
            or (labels.size and (labels.min() < 0 or labels.max() >= classes)):
        raise DataError(f"CIFAR file {path!r}: {label_key!r} must be {data.shape[0]} integers in "
                        f"0..{classes - 1}, got {labels.dtype} {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _find_cifar(root: str, dataset: str | None) -> tuple[str, str]:
    """(dataset, folder holding its files) under `root`."""
    found = []
    for name, (folder, train_files, test_file, _, _) in CIFAR_LAYOUTS.items():
        if dataset not in (None, name):
            continue
        for path in (os.path.join(root, folder), root):
            if os.path.isfile(os.path.join(path, train_files[0])):
                found.append((name, path))
                break
    if len(found) == 1 or (found and dataset is not None):
        return found[0]
    if len(found) > 1:
        raise DataError(f"{root!r} holds both CIFAR-10 and CIFAR-100; choose one with "
                        "dataset='cifar10' or 'cifar100'")
    wanted = [n for n in CIFAR_LAYOUTS if dataset in (None, n)]
    expected = "; or ".join(f"{CIFAR_LAYOUTS[n][0]}/{{{', '.join(CIFAR_LAYOUTS[n][1] + (CIFAR_LAYOUTS[n][2],))}}}"
                            for n in wanted)
    state = "does not exist" if not os.path.exists(root) else (
        "is not a directory" if not os.path.isdir(root) else "holds no CIFAR files")
    raise DataError(f"data directory {root!r} {state}: expected {expected} (the 'python version' "
                    "of CIFAR from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked there)")


def _statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) standard deviation in float64."""
    if images.dtype == np.uint8:  # exact and cheap from a 256-bin histogram per channel
        values = np.arange(256, dtype=np.float64)
        counts = np.stack([np.bincount(images[:, c].ravel(), minlength=256)
                           for c in range(images.shape[1])]).astype(np.float64)
        n = counts.sum(axis=1)
        mean = counts @ values / n
        var = counts @ values ** 2 / n - mean ** 2
    else:
        mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
        var = images.var(axis=(0, 2, 3), dtype=np.float64)
    std = np.sqrt(np.maximum(var, 0))
    return mean, np.where(std > 0, std, 1.0)


def _splits(name, images, labels, test_images, test_labels, classes, val_fraction, seed):
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction!r} must be in [0, 1) (0.2 is [MiCA]'s split)")
    n = len(labels)
    n_val = int(round(n * val_fraction))
    if n - n_val < 2:
        raise DataError(f"{name}: {n} training images leave {n - n_val} after the validation "
                        "split; training needs at least 2")
    order = np.random.default_rng(seed).permutation(n)
    train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
    mean, std = _statistics(images[train_idx])
    mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def make(x, y):
        return ImageSet(torch.from_numpy(np.ascontiguousarray(x)),
                        torch.from_numpy(np.ascontiguousarray(y)), classes, mean, std)

    return DataSplits(name, make(images[train_idx], labels[train_idx]),
                      make(images[val_idx], labels[val_idx]) if n_val else None,
                      make(test_images, test_labels) if test_labels is not None else None)


def load_cifar(root, *, dataset: str | None = None, val_fraction: float = 0.2,
               seed=0) -> DataSplits:
    """CIFAR-10 or CIFAR-100 from a local directory in the standard python-pickle format.

    `root` is the folder that holds ``cifar-10-batches-py`` or ``cifar-100-python`` (as unpacked
    from the official archives), or that folder itself. Every file is a pickled dict with
    ``b'data'`` (uint8, n x 3072, channel-major 32x32 planes) and ``b'labels'`` (CIFAR-10) or
    ``b'fine_labels'`` (CIFAR-100, 100 classes); only those types are unpickled.

    Parameters
    ----------
    root : str or path
    dataset : {"cifar10", "cifar100"}, optional
        Which one; found from the layout when `root` holds only one.
    val_fraction : float
        Share of the 50,000 training images held out for validation ([MiCA]: 0.2), chosen by a
        permutation seeded with `seed`; 0 keeps them all for training.
    seed : int
        Seeds the split only (the same seed gives the same split on every machine).

    Returns
    -------
    DataSplits
        ``train`` and ``val`` from the training files, ``test`` from the test file; all carry the
        training split's per-channel mean and std (about 125.3, 123.0, 113.9 and 63.0, 62.1, 66.7
        in 0..255 units for the full CIFAR-10 training set).

    Raises
    ------
    DataError
        If the directory or a file is missing or malformed; the message names the expected files.
    """
    root = os.fspath(root)
    if dataset is not None and dataset not in CIFAR_LAYOUTS:
        raise DataError(f"unknown data set {dataset!r}; known: {', '.join(CIFAR_LAYOUTS)}")
    dataset, folder = _find_cifar(root, dataset)
    _, train_files, test_file, key, classes = CIFAR_LAYOUTS[dataset]
    parts = [_read_batch(os.path.join(folder, f), key, classes) for f in train_files]
    test_images, test_labels = _read_batch(os.path.join(folder, test_file), key, classes)
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _splits(dataset, images, labels, test_images, test_labels, classes, val_fraction, seed)


# ------------------------------------------------------------------------------ synthetic
def synthetic_data(num_classes: int = 10, input_shape=(3, 32, 32), *, train_size: int = 1000,
                   test_size: int = 200, val_fraction: float = 0.2, noise: float = 0.5,
                   seed=0) -> DataSplits:
    """A learnable synthetic data set: class-dependent images plus Gaussian noise.

    Image = class colour (one value per channel) + a smooth class pattern (a 4x4 grid of random
    values upsampled to the image size, half the colour's scale) + ``noise`` x standard normal
    noise. The colour survives crops and flips, so the classes stay separable under the CIFAR
    augmentation; a convnet learns them in a few epochs. Drawn with numpy, so the same seed gives
    the same data on every machine.

    Parameters
    ----------
    num_classes : int
    input_shape : tuple of int
        (C, H, W) of one image.
    train_size, test_size : int
        Images in the training pool (split into train and validation by `val_fraction`) and in
        the test split; labels are balanced (class ``i % num_classes``) before shuffling.
    val_fraction : float
    noise : float
        Standard deviation of the pixel noise (the class colours have standard deviation 1).
    seed : int

    Returns
    -------
    DataSplits
        float32 images; ``name`` is ``"synthetic"``.

    Examples
    --------
    >>> data = synthetic_data(4, (3, 8, 8), train_size=100, test_size=20)
    >>> len(data.train), len(data.val), len(data.test), data.num_classes
    (80, 20, 20, 4)
    """
    try:
        shape = tuple(int(s) for s in input_shape)
        sizes = int(num_classes), int(train_size), int(test_size)
    except (TypeError, ValueError):
        shape, sizes = (), (0, 0, 0)
    if len(shape) != 3 or min(shape) < 1 or min(sizes[:2]) < 1 or sizes[2] < 0 \
            or not float(noise) >= 0:
        raise DataError(f"synthetic_data needs num_classes >= 1, a (C, H, W) input_shape, "
                        f"train_size >= 1, test_size >= 0 and noise >= 0; got num_classes="
                        f"{num_classes!r}, input_shape={input_shape!r}, train_size={train_size!r}, "
                        f"test_size={test_size!r}, noise={noise!r}")
    classes, n_train, n_test = sizes
    channels, height, width = shape
    rng = np.random.default_rng(seed)
    colour = rng.standard_normal((classes, channels, 1, 1))
    grid = rng.standard_normal((classes, channels, 4, 4)) * 0.5
    rows = np.minimum(np.arange(height) * 4 // height, 3)
    cols = np.minimum(np.arange(width) * 4 // width, 3)
    prototypes = colour + grid[:, :, rows][:, :, :, cols]

    def draw(n):
        labels = rng.permutation(np.arange(n) % classes)
        images = prototypes[labels] + float(noise) * rng.standard_normal((n, *shape))
        return images.astype(np.float32), labels.astype(np.int64)

    images, labels = draw(n_train)
    test_images, test_labels = draw(n_test)
    return _splits("synthetic", images, labels, test_images, test_labels if n_test else None,
                   classes, val_fraction, seed)


@functools.lru_cache(maxsize=4)
def _cached_cifar(root, dataset, val_fraction, seed):
    return load_cifar(root, dataset=dataset, val_fraction=val_fraction, seed=seed)


def load_data(spec, *, num_classes: int | None = None, input_shape=None,
              val_fraction: float = 0.2, seed=0, dataset: str | None = None) -> DataSplits:
    """Data for the CLI and studies: ``"synthetic"`` or a CIFAR directory (cached per process).

    Parameters
    ----------
    spec : str or path or DataSplits
        ``"synthetic"`` (:func:`synthetic_data` with `num_classes` and `input_shape`), a
        directory for :func:`load_cifar`, or data already loaded (returned as is).
    num_classes : int, optional
        The model's classes: a CIFAR directory with another count is a DataError.
    input_shape : tuple of int, optional
        The model's input; a CIFAR directory with another image shape is a DataError.
    val_fraction, seed, dataset
        As for :func:`load_cifar` (the split seed).
    """
    if isinstance(spec, DataSplits):
        data = spec
    elif str(spec) == "synthetic":
        data = synthetic_data(num_classes or 10, input_shape or (3, 32, 32),
                              val_fraction=val_fraction, seed=seed)
    else:
        data = _cached_cifar(os.path.abspath(os.fspath(spec)), dataset, float(val_fraction),
                             seed)
    if num_classes is not None and data.num_classes != num_classes:
        raise DataError(f"the data ({data.name}) has {data.num_classes} classes but the model has "
                        f"{num_classes}; build the model with num_classes={data.num_classes} "
                        f"(--num-classes {data.num_classes})")
    if input_shape is not None and tuple(input_shape) != data.input_shape:
        raise DataError(f"the data ({data.name}) has images of shape {data.input_shape} but the "
                        f"model expects {tuple(input_shape)}")
    return data


# ------------------------------------------------------------------------------ augmentation
def crop_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Crop every image of a batch at its own offset after zero padding, and flip some.

    Image i is zero-padded by `padding` pixels on every side, cropped back to (H, W) with its
    top-left corner at (top[i], left[i]) of the padded image (0 .. 2 * padding), and mirrored left
    to right where flip[i]. That is torchvision's ``RandomCrop(size, padding)`` followed by
    ``RandomHorizontalFlip`` when the offsets are uniform, done as one gather for the whole batch.

    Parameters
    ----------
    images : tensor (n, C, H, W), any dtype, any device
    top, left : int64 tensors (n,)
    flip : bool tensor (n,)
    padding : int

    Returns
    -------
    tensor (n, C, H, W), same dtype and device (channels-last strides)

    Examples
    --------
    >>> x = torch.arange(4.).view(1, 1, 2, 2)
    >>> crop_flip(x, torch.tensor([1]), torch.tensor([1]), torch.tensor([True]), padding=1)[0, 0]
    tensor([[1., 0.],
            [3., 2.]])
    """
    n, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4) if padding else images
    device = images.device
    rows = top.to(device).view(n, 1) + torch.arange(height, device=device)
    offsets = torch.arange(width, device=device)
    cols = left.to(device).view(n, 1) + torch.where(flip.to(device).view(n, 1),
                                                     width - 1 - offsets, offsets)
    batch = torch.arange(n, device=device).view(n, 1, 1)
    return padded[batch, :, rows.view(n, height, 1), cols.view(n, 1, width)].permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------ noise batches
def synthetic_batches(input_shape, num_classes: int = 10, batch_size: int | None = None,
                      num_batches: int = 1, seed=0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random (inputs, labels) batches: standard-normal inputs and uniform labels.

    For demos and tests of SNIP/GraSP without a data set; real pruning uses real images
    (10 x classes images: :meth:`ImageSet.prune_batches`). Drawn with numpy, so the same seed
    gives the same batches on every machine; the torch random state is not touched. A list, so it
    can be read more than once.

    Parameters
    ----------
    input_shape : tuple of int
        One input without the batch dimension, e.g. ``(3, 32, 32)``.
    num_classes : int
        Labels are drawn from ``0 .. num_classes - 1``.
    batch_size : int, optional
        Default ``10 * num_classes``.
    num_batches : int
    seed : int or numpy.random.Generator

    Returns
    -------
    list of (float32 tensor of shape (batch_size, *input_shape), int64 tensor of shape (batch_size,))

    Raises
    ------
    DataError
        If a size is not a positive whole number (an empty batch gives NaN losses).

    Examples
    --------
    >>> batches = synthetic_batches((3, 8, 8), num_classes=4, num_batches=2)
    >>> len(batches), tuple(batches[0][0].shape), int(batches[0][1].max()) < 4
    (2, (40, 3, 8, 8), True)
    """
    try:
        shape = tuple(int(s) for s in input_shape)
        sizes = (int(num_classes), 10 * int(num_classes) if batch_size is None else int(batch_size),
                 int(num_batches))
    except (TypeError, ValueError):
        shape, sizes = (), (0,)
    if not shape or min(shape) < 1 or min(sizes[:2]) < 1 or sizes[2] < 0:
        raise DataError(f"synthetic_batches needs positive sizes: input_shape={input_shape!r} "
                        f"(like (3, 32, 32)), num_classes={num_classes!r}, batch_size="
                        f"{batch_size!r}, num_batches={num_batches!r}")
    rng = np.random.default_rng(seed)
    num_classes, size, num_batches = sizes
    shape = (size, *shape)
    return [(torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)),
             torch.from_numpy(rng.integers(0, num_classes, size=size, dtype=np.int64)))
            for _ in range(num_batches)]
