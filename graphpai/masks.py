"""MaskSet: one boolean keep-mask per prunable layer (docs/definitions.md#masks).

Keys are layer names (module paths such as ``features.3`` or ``layer1.0.conv1``), the names
:class:`~graphpai.graph.NetGraph` uses: one mask per prunable weight, so a weight applied at two
places (weight tying, docs/graph.md#weight-tying) has one mask. True keeps a weight.
"""

from __future__ import annotations

import os
import zipfile
from typing import Iterator, Mapping

import numpy as np

from ._results import atomic_path
from .errors import MaskError

__all__ = ["MaskSet", "parse_nm", "nm_compliant", "nm_violations", "nm_eligible"]

_SUFFIXES = (".weight_mask", ".weight")


def _as_bool(name: str, value) -> np.ndarray:
    """Check one mask is 0/1 with no NaN and return it as a bool array of its own (a later change
    to the caller's array or tensor does not reach the MaskSet)."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = _torch_numpy(value)
    array = np.asarray(value)
    if array.dtype == bool:
        return array.copy()
    if not (np.issubdtype(array.dtype, np.number)):
        raise MaskError(f"mask for {name!r} has dtype {array.dtype}; masks must be 0/1 numbers or bools")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise MaskError(f"mask for {name!r} contains NaN; masks must be 0/1")
    bad = (array != 0) & (array != 1)
    if bad.any():
        example = array[bad].flat[0].item()  # 0.5, not np.float64(0.5)
        raise MaskError(
            f"mask for {name!r} has value {example!r} ({int(bad.sum())} entries not 0/1); "
            "masks must be binary: threshold scores before building a MaskSet"
        )
    return array.astype(bool)


def _torch_numpy(tensor) -> np.ndarray:
    """A torch tensor as numpy; bfloat16 and float8 (which numpy lacks) become float32."""
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy()
    except TypeError:
        return tensor.float().numpy()


class MaskSet(Mapping[str, np.ndarray]):
    """Layer name -> bool keep-mask, with counts, density and compression
    (docs/definitions.md#masks).

    Parameters
    ----------
    masks : mapping of str to array-like
        One 0/1 or bool array (numpy or torch) per layer. Keys ending in ``.weight_mask`` or
        ``.weight`` (state-dict style) are stripped to the layer name.

    Raises
    ------
    MaskError
        If a mask has a value other than 0/1, is NaN, or two keys name the same layer.

    Examples
    --------
    >>> m = MaskSet({"fc": [[1, 0], [1, 1]]})
    >>> m.kept(), m.numel(), m.compression()
    (3, 4, 1.3333333333333333)
    """

    def __init__(self, masks: Mapping):
        self._masks: dict[str, np.ndarray] = {}
        self._tied: dict[str, tuple[str, bool]] = {}   # tied use -> (layer, transposed)
        self._views: dict[str, np.ndarray] = {}
        if not isinstance(masks, Mapping):
            raise MaskError(f"masks must be a mapping of layer name to array, got "
                            f"{type(masks).__name__}; e.g. MaskSet({{'features.0': mask}})")
        if not masks:
            raise MaskError("a MaskSet needs at least one layer mask; MaskSet.dense(graph) makes "
                            "all-ones masks for every layer of a graph")
        for key, value in masks.items():
            name = self.layer_name(key)
            if name in self._masks:
                raise MaskError(f"two masks given for layer {name!r} (key {key!r})")
            self._masks[name] = _as_bool(name, value)

    @staticmethod
    def layer_name(key: str) -> str:
        """Strip a state-dict suffix: ``'features.0.weight_mask'`` -> ``'features.0'``."""
        for suffix in _SUFFIXES:
            if key.endswith(suffix):
                return key[: -len(suffix)]
        return key

    # Mapping protocol
    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._masks[name]
        except KeyError:
            if name in self._tied:
                return self._tied_mask(name)
            raise MaskError(f"no mask for layer {name!r}; masks exist for {list(self._masks)}") from None

    def _tied_mask(self, name: str) -> np.ndarray:
        """The mask a tied use reads: its layer's, transposed (a C-ordered copy, made once)
        where the use applies the weight the other way round."""
        layer, transposed = self._tied[name]
        if not transposed:
            return self._masks[layer]
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = np.ascontiguousarray(self._masks[layer].T)
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __contains__(self, name) -> bool:
        return name in self._masks or name in self._tied

    def __eq__(self, other) -> bool:
        if not isinstance(other, Mapping) or set(self) != set(other):
            return False
        return all(np.array_equal(self[k], np.asarray(other[k])) for k in self)

    def __repr__(self):
        return f"MaskSet({len(self)} layers, kept {self.kept()}/{self.numel()}, density {self.density():.4g})"

    # constructors
    @classmethod
    def dense(cls, graph) -> "MaskSet":
        """All-ones masks for every layer of a NetGraph."""
        return cls({name: np.ones(layer.weight_shape, dtype=bool) for name, layer in graph.layers.items()})

    # counts
    def kept(self, layer: str | None = None) -> int:
        """|M|: kept weights in `layer`, or in total."""
        if layer is not None:
            return int(np.count_nonzero(self[layer]))
        return sum(int(np.count_nonzero(m)) for m in self._masks.values())

    def numel(self, layer: str | None = None) -> int:
        """Number of weights in `layer`, or N in total."""
        if layer is not None:
            return int(self[layer].size)
        return sum(int(m.size) for m in self._masks.values())

    def density(self, layer: str | None = None) -> float:
        """|M| / N for `layer` or in total."""
        return self.kept(layer) / self.numel(layer)

    def compression(self, layer: str | None = None) -> float:
        """Direct compression N / |M|; ``inf`` when nothing is kept."""
        kept = self.kept(layer)
        return float("inf") if kept == 0 else self.numel(layer) / kept

    def counts(self) -> dict[str, int]:
        """Kept weights per layer."""
        return {name: int(np.count_nonzero(m)) for name, m in self._masks.items()}

    def nm_compliant(self, pattern) -> dict[str, bool]:
        """Layer -> whether its mask is N:M compliant for `pattern` (``"2:4"``): input width a
        multiple of M and at most N kept in every M consecutive input weights (docs/llm.md)."""
        return {name: nm_compliant(mask, pattern) for name, mask in self._masks.items()}

    # relation to a graph
    def validate(self, graph) -> "MaskSet":
        """Check the masks cover exactly the graph's layers with the right shapes; return self.

        For a graph with tied weights (docs/graph.md#weight-tying) it returns a MaskSet with the
        same arrays and keys that also answers ``masks[use]`` for every tied use of the graph:
        the mask of its layer, in the use's order."""
        unknown = [k for k in self._masks if k not in graph.layers]
        if unknown:
            raise MaskError(
                f"masks for unknown layer(s) {unknown}; this model's prunable layers are "
                f"{list(graph.layers)}"
            )
        missing = [k for k in graph.layers if k not in self._masks]
        if missing:
            raise MaskError(
                f"no mask for layer(s) {missing}; give every prunable layer a mask "
                "(MaskSet.dense(graph) gives all-ones masks to start from)"
            )
        for name, layer in graph.layers.items():
            shape = self._masks[name].shape
            if shape != tuple(layer.weight_shape):
                raise MaskError(
                    f"mask for {name!r} has shape {shape} but the weight is "
                    f"{tuple(layer.weight_shape)}; regenerate the mask for this model"
                )
        tied = {name: (op.param, op.param_transposed)
                for name, op in getattr(graph, "uses", {}).items() if op.param is not None}
        if not tied or tied == self._tied:
            return self
        bound = MaskSet.__new__(MaskSet)  # the same arrays, and the graph's tied uses
        bound._masks, bound._tied, bound._views = self._masks, tied, {}
        return bound

    def rename(self, mapping: Mapping[str, str]) -> "MaskSet":
        """A copy with layers renamed by `mapping` (names not in it are kept)."""
        renamed: dict[str, np.ndarray] = {}
        for key, value in self._masks.items():
            name = mapping.get(key, key)
            if name in renamed:  # a dict comprehension would silently drop one of the two
                raise MaskError(f"renaming gives two masks the name {name!r}; the mapping must "
                                "give every layer its own name")
            renamed[name] = value
        return MaskSet(renamed)

    def intersect(self, other: Mapping) -> "MaskSet":
        """Elementwise AND with another mask set over the same layers."""
        return MaskSet({k: self[k] & np.asarray(other[k], dtype=bool) for k in self})

    # files
    def save(self, path) -> None:
        """Write ``.npz`` (numpy), ``.pt`` (torch, ``{name: bool tensor}``) or ``.safetensors``
        (``{name: BOOL tensor}``; needs the ``safetensors`` package, ``pip install graphpai[io]``)
        atomically."""
        path = os.fspath(path)
        kind = _file_kind(path)
        if kind == "safetensors":
            numpy_io = _safetensors("numpy")
        with atomic_path(path) as tmp:
            if kind == "safetensors":
                numpy_io.save_file({k: np.ascontiguousarray(v) for k, v in self._masks.items()},
                                   tmp, metadata={"format": "graphpai.MaskSet"})
            elif kind == "npz":  # like np.savez_compressed, but any layer name is a valid key
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                    for name, mask in self._masks.items():
                        with archive.open(f"{name}.npy", "w", force_zip64=True) as fh:
                            np.lib.format.write_array(fh, mask, allow_pickle=False)
            else:
                import torch

                torch.save({k: torch.from_numpy(v.copy()) for k, v in self._masks.items()}, tmp)

    @classmethod
    def load(cls, path, *, weights: bool = False) -> "MaskSet":
        """Read a ``.npz``, ``.pt`` or ``.safetensors`` file: plain masks, a
        ``{name.weight_mask: ...}`` state dict, or a whole pruned model's state dict (only the
        ``weight_mask`` buffers are taken).

        With ``weights=True`` the file holds a pruned model's weights, as Hugging Face
        checkpoints of pruned LLMs do (pruned weights stored as zeros): every ``*.weight`` of two
        or more dimensions gives the mask of its non-zero entries (see :meth:`from_weights`).
        """
        path = os.fspath(path)
        kind = _file_kind(path)
        if not os.path.exists(path):
            raise MaskError(f"mask file {path!r} does not exist")
        if kind == "safetensors":
            return cls._load_safetensors(path, weights)
        try:
            if kind == "npz":
                if not zipfile.is_zipfile(path):  # np.load would report "pickled data"
                    raise MaskError(f"cannot read masks from {path!r}: it is not a .npz archive "
                                    "(MaskSet.save or numpy.savez write one)")
                with np.load(path, allow_pickle=False) as data:
                    raw = {k: data[k] for k in data.files}
            else:
                import torch

                raw = torch.load(path, map_location="cpu", weights_only=True)
        except MaskError:
            raise
        except Exception as exc:  # a corrupt or foreign file; torch's messages span many lines
            if "Unsupported global" in str(exc):  # torch's weights_only refuses Python objects
                raise MaskError(
                    f"cannot read masks from {path!r}: it holds pickled Python objects (a whole "
                    "model?); save a state dict instead: torch.save(model.state_dict(), path) or "
                    "torch.save({name: mask}, path)") from None
            if "Weights only load failed" in str(exc):
                raise MaskError(f"cannot read masks from {path!r}: it is not a file written by "
                                "torch.save (or it is damaged)") from None
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MaskError(f"cannot read masks from {path!r}: {reason}") from None
        if weights:
            return cls.from_weights(raw, source=path)
        return cls.from_state_dict(raw, source=path)

    @classmethod
    def _load_safetensors(cls, path: str, weights: bool) -> "MaskSet":
        """One tensor at a time (the file is memory-mapped), so a checkpoint of an LLM never has
        all of its weights in memory as floats."""
        safe_open = _safetensors("safe_open")
        try:
            with safe_open(path, framework="pt") as archive:
                keys = list(archive.keys())
                if weights:
                    return cls._nonzero({k: archive.get_slice(k) for k in keys},
                                        lambda k: archive.get_tensor(k), source=path)
                raw = {k: archive.get_tensor(k) for k in keys}
        except MaskError:
            raise
        except Exception as exc:  # not a safetensors file, a damaged header, ...
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MaskError(f"cannot read masks from {path!r}: it is not a safetensors file "
                            f"({reason})") from None
        return cls.from_state_dict(raw, source=path)

    @classmethod
    def from_weights(cls, state: Mapping, *, source: str = "state dict") -> "MaskSet":
        """Masks of a pruned model's weights: every ``*.weight`` of two or more dimensions
        (conv, linear, embedding) gives ``weight != 0``; a ``*.weight_mask`` buffer, where there
        is one, is used instead. Biases, norms and other 1-D tensors are ignored.

        This reads the checkpoints that LLM pruning code (Wanda, SparseGPT) writes: pruned weights
        are stored as zeros in an ordinary Hugging Face state dict. To match the keys to a model's
        layers (prefixes, tied weights) use :func:`graphpai.torch.state.masks_from_state_dict`.

        Examples
        --------
        >>> MaskSet.from_weights({"fc.weight": [[0.5, 0.0], [0.0, -2.0]], "fc.bias": [1.0, 0.0]}
        ...                      )["fc"].astype(int).tolist()
        [[1, 0], [0, 1]]
        """
        if not isinstance(state, Mapping):
            raise MaskError(f"{source} holds a {type(state).__name__}, not a mapping of weights")
        return cls._nonzero({k: v for k, v in state.items()}, lambda k: state[k], source=source)

    @classmethod
    def _nonzero(cls, entries: Mapping, fetch, *, source: str) -> "MaskSet":
        """`entries`: key -> anything with a shape (``get_shape()`` for a safetensors slice);
        `fetch(key)` gives the values."""
        def shape(entry):
            return tuple(entry.get_shape()) if hasattr(entry, "get_shape") else np.shape(entry)

        buffers = {cls.layer_name(k) for k in entries if k.endswith(".weight_mask")}
        masks = {}
        for key, entry in entries.items():
            name = cls.layer_name(key)
            if key.endswith(".weight_mask"):
                masks[name] = _as_bool(name, fetch(key))
            elif (key.endswith((".weight", ".weight_orig")) and name not in buffers
                  and len(shape(entry)) >= 2):
                masks[name] = _nonzero_values(fetch(key))
        if not masks:
            raise MaskError(f"{source} has no '*.weight' tensor of two or more dimensions (keys: "
                            f"{list(entries)[:5]}...); is it a model's state dict?")
        return cls(masks)

    @classmethod
    def from_state_dict(cls, state: Mapping, *, source: str = "state dict") -> "MaskSet":
        """Masks from ``{name: tensor}``, ``{name.weight_mask: tensor}`` or a pruned model's
        full state dict: then the ``*.weight_mask`` buffers are the masks, and a layer without one
        (a conv/linear ``*.weight`` of 2 or more dimensions that torch prune left alone) is
        dense."""
        if not isinstance(state, Mapping):
            raise MaskError(f"{source} holds a {type(state).__name__}, not a mapping of layer masks")
        if any(k.endswith(".weight_mask") for k in state):
            masks = {cls.layer_name(k): v for k, v in state.items() if k.endswith(".weight_mask")}
            # a layer torch prune left alone keeps a plain conv/linear weight (2-D or more): dense
            for key, value in state.items():
                name = cls.layer_name(key)
                if key.endswith(".weight") and name not in masks and len(value.shape) >= 2:
                    masks[name] = np.ones(tuple(value.shape), dtype=bool)
            state = masks
        else:
            model_keys = [k for k in state if k.endswith((".bias", ".running_mean", ".weight_orig"))]
            if model_keys:  # would fail below as "mask for 'conv' has value 0.0123"
                raise MaskError(
                    f"{source} looks like a model's state dict without masks (it has "
                    f"{model_keys[0]!r} and no '*.weight_mask' buffers); prune the model first "
                    "(graphpai.torch.masks.apply_masks or torch.nn.utils.prune) or save "
                    "{layer name: mask}")
        return cls(state)


def _nonzero_values(value) -> np.ndarray:
    """``value != 0`` as a bool array (torch tensors of any dtype, bfloat16 included)."""
    if hasattr(value, "detach"):
        return (value.detach() != 0).cpu().numpy()
    return np.asarray(value) != 0


def _safetensors(name: str):
    """``safetensors.numpy`` or ``safetensors.safe_open``, or a MaskError saying how to get it."""
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        raise MaskError("reading or writing .safetensors needs the safetensors package: "
                        "pip install 'graphpai[io]' (or pip install safetensors)") from None
    return safetensors.numpy if name == "numpy" else safetensors.safe_open


def _file_kind(path: str) -> str:
    if path.endswith(".npz"):
        return "npz"
    if path.endswith((".pt", ".pth", ".bin")):
        return "pt"
    if path.endswith(".safetensors"):
        return "safetensors"
    raise MaskError(f"unknown mask file type {path!r}; use a .npz, .pt or .safetensors file")


# ------------------------------------------------------------------ N:M patterns (docs/llm.md)
def parse_nm(pattern) -> tuple[int, int]:
    """``"2:4"``, ``"2/4"`` or ``(2, 4)`` as ``(N, M)`` with ``1 <= N <= M``.

    Raises
    ------
    MaskError
        If the pattern is not two integers with ``1 <= N <= M``.

    Examples
    --------
    >>> parse_nm("2:4"), parse_nm((4, 8))
    ((2, 4), (4, 8))
    """
    try:
        if isinstance(pattern, str):
            text = pattern.replace("/", ":")
            n, m = (int(part) for part in text.split(":"))
        else:
            n, m = (int(part) for part in pattern)
    except (TypeError, ValueError):
        raise MaskError(f"N:M pattern {pattern!r} is not two integers; write it as '2:4' or "
                        "(2, 4)") from None
    if not 1 <= n <= m:
        raise MaskError(f"N:M pattern {pattern!r} needs 1 <= N <= M (N kept of every M), "
                        "e.g. '2:4' or '4:8'")
    return n, m


def _nm_groups(mask: np.ndarray, m: int) -> np.ndarray:
    """The weight as ``(..., width / m, m)`` with the input-channel axis last (a view for 2-D)."""
    array = np.asarray(mask)
    if array.ndim > 2:  # (C_out, C_in, *k) -> (C_out, *k, C_in)
        array = np.moveaxis(array, 1, -1)
    return array.reshape(*array.shape[:-1], array.shape[-1] // m, m)


def nm_eligible(shape, m: int) -> bool:
    """Whether a weight of `shape` can be cut into groups of `m` input channels."""
    return len(shape) >= 2 and shape[1] % m == 0


def nm_violations(mask, pattern) -> int | None:
    """Number of groups that keep more than N weights; None when the input width is not a
    multiple of M (no grouping exists).

    Examples
    --------
    >>> nm_violations([[1, 1, 0, 0, 1, 1, 1, 0]], "2:4")
    1
    """
    n, m = parse_nm(pattern)
    mask = np.asarray(mask, dtype=bool)
    if not nm_eligible(mask.shape, m):
        return None
    counts = _nm_groups(mask.view(np.uint8), m).sum(axis=-1, dtype=np.int64)
    return int(np.count_nonzero(counts > n))


def nm_compliant(mask, pattern) -> bool:
    """Whether `mask` (one layer's, ``(C_out, C_in/groups, *kernel)``) is N:M compliant: its
    input width is a multiple of M and every group of M consecutive input weights keeps at most N.

    Examples
    --------
    >>> nm_compliant([[1, 0, 0, 1, 0, 1, 1, 0]], "2:4"), nm_compliant([[1, 1, 1, 0]], "2:4")
    (True, False)
    >>> nm_compliant([[1, 0, 1]], "2:4")  # width 3 has no groups of 4
    False
    """
    return nm_violations(mask, pattern) == 0
