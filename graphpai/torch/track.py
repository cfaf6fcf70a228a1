"""Topology tracking: a mask's graph metrics recorded while it trains (docs/dst.md#tracking).

:class:`TopologyTracker` is a ``graphpai.torch.train`` callback. At the steps it is given (step 0,
every `every` steps, the listed `steps` and the last step) it records, on the current masks:

- the audit totals (functional weights and ratio, corrected compression, functional nodes;
  docs/definitions.md#functional, [MiCA], [VK]) in the chosen semantics (``channel`` by default);
- effective paths, channel paths and effective nodes (docs/definitions.md#paths, [NPB]);
- the network means of the spectral quantities under both profiles, ``iclr23`` ([RAM]) and
  ``neurips23`` ([FS]), with the *current* weights for the weighted ones (weighted gap, IMDB_r,
  the full-spectrum norm), and per layer Delta_r and the weighted gap;
- the churn since the previous record: weights that left (``dropped``) and joined (``regrown``)
  the mask, and the Jaccard overlap of the kept weights with the initial and the previous mask.

The tracker only reads the masks, so it works for static masks (every mask-only value is then
the same at every record) as for dynamic sparse training (:mod:`graphpai.torch.dst`). With an
output directory it writes, atomically after every record and every epoch, ``topology.csv`` (one
row per record), ``topology_layers.csv`` (one row per record and layer) and ``topology.json``
(both tables, the per-epoch accuracies and the run's facts), and every `masks_every` steps the
masks as ``masks/step_NNNNNNN.npz`` (deflate-compressed, readable by ``MaskSet.load``). Its
state is in the training checkpoint, so a resumed run continues the same tables.

References
----------
.. [MiCA] H. Otsuka et al., "Restricted Random Pruning at Initialization for High Compression
   Range", TMLR 2024.
.. [VK] A. Vysogorets, J. Kempe, "Connectivity Matters: Neural Network Pruning Through the Lens of
   Effective Sparsity", JMLR 2023.
.. [NPB] H. Pham et al., "Towards Data-Agnostic Pruning at Initialization: What Makes a Good
   Sparse Mask?", NeurIPS 2023.
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import copy
import os
import time

import numpy as np

from ..errors import TrainError
from ..spectral.report import SUMMARY_MEANS
from .train import Callback, TrainInfo

__all__ = ["TopologyTracker", "TABLE", "LAYER_TABLE", "TRACK_JSON", "MASKS_DIR", "MASK_ONLY",
           "SPECTRAL_MEANS", "PROFILES", "read_track", "mask_file"]

TABLE, LAYER_TABLE, TRACK_JSON, MASKS_DIR = ("topology.csv", "topology_layers.csv",
                                             "topology.json", "masks")
_FORMAT = "graphpai-topology-1"
PROFILES = ("iclr23", "neurips23")
SPECTRAL_MEANS = SUMMARY_MEANS
"""Spectral means recorded per profile (columns ``{profile}_{name}``), as in a study's table."""
_WEIGHTED = {"weighted_gap", "imdb_r", "coordinate_norm"}
_LAYER_FIELDS = ("delta_r", "delta_r_norm", "weighted_gap", "coordinate_norm")


def _mask_only_columns(semantics: str) -> tuple[str, ...]:
    audit = tuple(f"{semantics}_{c}" for c in ("functional", "functional_ratio",
                                                "corrected_compression", "functional_nodes",
                                                "disconnected"))
    spectral = tuple(f"{p}_{m}" for p in PROFILES for m in SPECTRAL_MEANS if m not in _WEIGHTED)
    spectral += tuple(f"{p}_positive_gap_share" for p in PROFILES)
    return ("kept",) + audit + ("log10_paths", "log10_channel_paths", "effective_nodes") + spectral


MASK_ONLY = _mask_only_columns("channel")
"""Columns (channel semantics) that depend on the masks only: constant on a static mask."""


def mask_file(step: int) -> str:
    """The file name of the masks saved at `step` (under ``masks/``)."""
    return f"step_{int(step):07d}.npz"


def _pack(maskset) -> dict:
    return {n: (np.packbits(m.ravel()), m.shape) for n, m in maskset.items()}


def _unpack(packed) -> dict:
    return {n: np.unpackbits(bits, count=int(np.prod(shape))).astype(bool).reshape(shape)
            for n, (bits, shape) in packed.items()}


class TopologyTracker(Callback):
    """Record the topology of the training masks at chosen steps (see the module docstring).

    Place it after a :class:`~graphpai.torch.dst.DynamicSparsity` callback in the list, so that a
    record sees the masks after that step's update.

    Parameters
    ----------
    out_dir : path, optional
        Where the tables and masks go; None keeps them in memory only (`rows`, `layers`).
    every : int, optional
        Record every `every` optimizer steps (and at step 0 and the last step); None: only at
        those and the listed `steps`.
    steps : iterable of int
        More steps to record at.
    masks_every : int, optional
        Save the masks at every record whose step is a multiple of this (step 0 and the last step
        always, when set); None saves none.
    graph : NetGraph, optional
        The model's graph; by default traced once from a CPU copy of the model.
    input_shape : tuple of int, optional
        For tracing a model without ``input_shape``.
    semantics : {"channel", "spatial", "mica"}
        Of the audit and the effective nodes.
    paths, spectral : bool
        Record the path counts / the spectral means (the audit and the churn always).
    meta : dict, optional
        Facts stored in ``topology.json`` (the CLI stores the model, masks and DST settings).

    Attributes
    ----------
    rows : list of dict
        One per record (columns in docs/dst.md#tracking).
    layers : list of dict
        One per record and layer: ``step``, ``layer``, ``kept``, ``dropped``, ``regrown`` and
        ``{profile}_{delta_r, delta_r_norm, weighted_gap, coordinate_norm}``.
    epochs : list of dict
        Per epoch: ``epoch``, ``step``, train loss/accuracy, validation and test accuracy.
    """

    def __init__(self, out_dir=None, *, every: int | None = 100, steps=(), masks_every=None,
                 graph=None, input_shape=None, semantics: str = "channel", paths: bool = True,
                 spectral: bool = True, meta: dict | None = None):
        for name, value in (("every", every), ("masks_every", masks_every)):
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, np.integer)) or value < 1):
                raise TrainError(f"{name} must be a whole number >= 1 or None, got {value!r}")
        if semantics not in ("channel", "spatial", "mica"):
            raise TrainError(f"semantics {semantics!r} is not channel, spatial or mica")
        self.out_dir = None if out_dir is None else os.fspath(out_dir)
        self.every = None if every is None else int(every)
        self.steps = {int(s) for s in steps}
        self.masks_every = None if masks_every is None else int(masks_every)
        self.graph = graph
        self.input_shape = input_shape
        self.semantics = semantics
        self.paths = bool(paths)
        self.spectral = bool(spectral)
        self.meta = dict(meta or {})
        self.rows: list[dict] = []
        self.layers: list[dict] = []
        self.epochs: list[dict] = []
        self.info: TrainInfo | None = None
        self._initial = self._previous = None
        self._loaded = False

    # ------------------------------------------------------------------ when
    def is_record_step(self, step: int) -> bool:
        total = self.info.total_steps if self.info is not None else None
        return (step == 0 or step in self.steps or step == total
                or (self.every is not None and step % self.every == 0))

    def _saves_masks(self, step: int) -> bool:
        if self.masks_every is None or self.out_dir is None:
            return False
        total = self.info.total_steps if self.info is not None else None
        return step == 0 or step == total or step % self.masks_every == 0

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, info: TrainInfo) -> None:
        self.info = info
        if info.start_step > 0 and not self._loaded:
            raise TrainError("this run's checkpoint was made without topology tracking (or with "
                             "other callbacks); use another output directory")
        if info.start_step == 0 and info.model is not None and not self.rows:
            self.record(0, info.model, info.masks)

    def on_step(self, step, model, masks, optimizer) -> None:
        if self.is_record_step(step):
            self.record(step, model, masks)

    def on_epoch_end(self, epoch, model, masks, optimizer, result) -> None:
        e = result.history[-1]
        step = epoch * self.info.steps_per_epoch if self.info is not None else None
        self.epochs.append({"epoch": epoch, "step": step, "train_loss": e.train_loss,
                            "train_acc": e.train_acc, "val_acc": e.val_acc, "test_acc": e.test_acc})
        self.write()

    # ------------------------------------------------------------------ recording
    def _graph(self, model):
        if self.graph is None:
            from .extract import to_graph

            shape = self.input_shape or getattr(model, "input_shape", None)
            self.graph = to_graph(copy.deepcopy(model).cpu().float(), shape)
        return self.graph

    def record(self, step: int, model, masks) -> dict:
        """Measure the current masks (and weights) now, as the record of `step`; returns the row."""
        from ..functional import audit
        from ..masks import MaskSet

        started = time.perf_counter()
        graph = self._graph(model)
        current = MaskSet({n: masks[n].detach().cpu().numpy() for n in masks})
        if self._initial is None:
            self._initial = current
        previous = self._previous if self._previous is not None else current
        spe = self.info.steps_per_epoch if self.info is not None else None
        row = {"step": int(step), "epoch": step / spe if spe else None, "kept": current.kept()}
        a = audit(graph, current, semantics=self.semantics)
        s = self.semantics
        row.update({f"{s}_functional": a.functional,
                    f"{s}_functional_ratio": a.functional / a.kept if a.kept else None,
                    f"{s}_corrected_compression": a.corrected_compression,
                    f"{s}_functional_nodes": a.functional_nodes,
                    f"{s}_disconnected": a.disconnected})
        if self.paths:
            from ..paths import paths

            p = paths(graph, current, semantics=self.semantics)
            row.update({"log10_paths": p.log10_paths, "log10_channel_paths": p.log10_channel_paths,
                        "effective_nodes": p.effective_nodes})
        per_layer = {n: {"step": int(step), "layer": n,
                         "kept": int(np.count_nonzero(current[n])),
                         "dropped": int(np.count_nonzero(previous[n] & ~current[n])),
                         "regrown": int(np.count_nonzero(current[n] & ~previous[n]))}
                     for n in current}
        if self.spectral:
            from ..spectral import spectral
            from .extract import layer_weights

            weights = layer_weights(model)  # the current weights
            for profile in PROFILES:
                report = spectral(graph, current, weights, profile=profile, workers=1)
                for name in SPECTRAL_MEANS:
                    row[f"{profile}_{name}"] = report.means[name].mean
                row[f"{profile}_positive_gap_share"] = report.positive_gap_share.mean
                for layer in report.layers:
                    if layer.layer in per_layer:
                        for name in _LAYER_FIELDS:
                            per_layer[layer.layer][f"{profile}_{name}"] = getattr(layer, name)
        both = sum(int(np.count_nonzero(current[n] & previous[n])) for n in current)
        union = sum(int(np.count_nonzero(current[n] | previous[n])) for n in current)
        both0 = sum(int(np.count_nonzero(current[n] & self._initial[n])) for n in current)
        union0 = sum(int(np.count_nonzero(current[n] | self._initial[n])) for n in current)
        row.update({"dropped": sum(r["dropped"] for r in per_layer.values()),
                    "regrown": sum(r["regrown"] for r in per_layer.values()),
                    "jaccard_initial": both0 / union0 if union0 else None,
                    "jaccard_previous": both / union if union else None})
        self._previous = current
        if self._saves_masks(step):
            current.save(os.path.join(self.out_dir, MASKS_DIR, mask_file(step)))
            row["masks_file"] = f"{MASKS_DIR}/{mask_file(step)}"
        else:
            row["masks_file"] = None
        row["record_s"] = time.perf_counter() - started
        self.rows = [r for r in self.rows if r["step"] != step] + [row]
        self.layers = [r for r in self.layers if r["step"] != step] + list(per_layer.values())
        self.write()
        return row

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        info = self.info
        facts = {} if info is None else {"epochs": info.epochs,
                                         "steps_per_epoch": info.steps_per_epoch,
                                         "total_steps": info.total_steps, "seed": info.seed,
                                         "device": info.device, "recipe": info.recipe.name}
        return {"format": _FORMAT, "semantics": self.semantics, **facts, "meta": self.meta,
                "rows": self.rows, "layers": self.layers, "accuracy": self.epochs}

    def write(self) -> None:
        """Write the tables and ``topology.json`` into `out_dir` (atomically; no-op without it)."""
        if self.out_dir is None:
            return
        from ..report.tables import write_csv, write_json

        write_csv(self.rows, os.path.join(self.out_dir, TABLE), _columns(self.rows))
        write_csv(self.layers, os.path.join(self.out_dir, LAYER_TABLE), _columns(self.layers))
        write_json(self.to_dict(), os.path.join(self.out_dir, TRACK_JSON))

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"kind": _FORMAT, "rows": self.rows, "layers": self.layers, "epochs": self.epochs,
                "initial": None if self._initial is None else _pack(self._initial),
                "previous": None if self._previous is None else _pack(self._previous)}

    def load_state_dict(self, state: dict) -> None:
        from ..masks import MaskSet

        if not isinstance(state, dict) or state.get("kind") != _FORMAT:
            raise TrainError("this run's checkpoint holds no topology-tracking state at this "
                             "callback's place; use another output directory")
        self.rows, self.layers, self.epochs = (list(state["rows"]), list(state["layers"]),
                                               list(state["epochs"]))
        self._initial = MaskSet(_unpack(state["initial"])) if state["initial"] else None
        self._previous = MaskSet(_unpack(state["previous"])) if state["previous"] else None
        self._loaded = True


def _columns(rows) -> list[str]:
    out = []
    for row in rows:
        out.extend(k for k in row if k not in out)
    return out


def read_track(run_dir) -> dict:
    """``topology.json`` of a tracked run directory (or the file itself).

    Raises
    ------
    DataError
        If there is none or it is not a graphpai topology record.
    """
    import json

    from ..errors import DataError

    path = os.fspath(run_dir)
    if os.path.isdir(path):
        path = os.path.join(path, TRACK_JSON)
    if not os.path.exists(path):
        raise DataError(f"{path!r} does not exist; train with --track-every K (a "
                        "TopologyTracker with an output directory) to record the topology")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path!r} cannot be read ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise DataError(f"{path!r} is not a graphpai topology record")
    return data
