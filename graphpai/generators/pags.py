r"""PAGS: per-layer selection of masks by their full-spectrum coordinate ([FS]; docs/pags.md).

Start from a base mask of a pruning-at-initialization method; draw `population` candidates from
the same method (ranking methods: SNIP/GraSP on a random mini-batch of ``batch_k * classes``
images of the prune data, SynFlow on a copy of the model with multiplicative weight noise;
placements such as RPI or MiCA: a new seed). Candidates are visited in order; in every layer the
candidate's mask replaces the current one when

- ``rule="imdb"`` ([FS]'s default): its IMDB_r and its full-spectrum norm S are both at least
  the current ones;
- ``rule="delta_r"`` ([FS]'s alternative): its whole-layer Delta_r is lower and its S at least
  as high.

IMDB_r, Delta_r and S are the [FS] quantities of :func:`graphpai.spectral.layer_spectrum` with
the ``neurips23`` gate, on ``|W * M|`` for the model's weights (unscored entries count as 0, as
in the coordinate). Because layers come from different candidates, the per-layer and total
densities can drift from the base mask's; :class:`PAGSResult` reports the drift, the source of
every layer and the fraction of weights any mask kept (explored).

References
----------
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology
   is a secret weapon", NeurIPS 2023. Code: dst-ram-pruning, ``lth_tickets_generation.py``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from .._results import jsonable
from ..errors import DataError, GraphpaiError, ModelError, SolverError, UnknownMethodError
from ..masks import MaskSet
from ._registry import get_generator, register

__all__ = ["pags", "solve_pags", "select", "layer_scores", "accepts", "LayerScore", "PAGSLayer",
           "PAGSResult", "RULES"]

RULES = ("imdb", "delta_r")


# ------------------------------------------------------------------------------ scores and rule
@dataclass(frozen=True)
class LayerScore:
    """The [FS] quantities PAGS compares for one layer's mask (None entries counted as 0).

    ``norm`` is None only when a singular value did not converge (the layer is then never
    replaced by that mask)."""

    imdb_r: float
    delta_r: float
    norm: float | None


def accepts(candidate: LayerScore, current: LayerScore, rule: str = "imdb") -> bool:
    """Whether `candidate` replaces `current` in a layer (module docstring).

    Examples
    --------
    >>> accepts(LayerScore(2.0, 1.0, 5.0), LayerScore(2.0, 3.0, 4.0))  # ties count
    True
    >>> accepts(LayerScore(1.9, 1.0, 9.0), LayerScore(2.0, 3.0, 4.0))  # IMDB_r fell
    False
    >>> accepts(LayerScore(1.9, 1.0, 9.0), LayerScore(2.0, 3.0, 4.0), rule="delta_r")
    True
    """
    if rule not in RULES:
        raise UnknownMethodError(f"unknown PAGS rule {rule!r}; use one of {list(RULES)}")
    if candidate.norm is None:
        return False
    if current.norm is None:
        return True
    if rule == "imdb":
        return candidate.imdb_r >= current.imdb_r and candidate.norm >= current.norm
    return candidate.delta_r < current.delta_r and candidate.norm >= current.norm


def _score(name, mask, weight) -> LayerScore:
    """Scores of one layer from its mask and ``|W|``, both ``(C_out, fan_in)``: the [FS]-only
    row of :func:`graphpai.spectral.layer_spectrum` (``quantities="fs"``), read straight from
    these arrays (no transposed copies, no ``|W * M|`` product per candidate)."""
    from ..spectral.formulas import get_gate
    from ..spectral.layer import layer_row
    from ..spectral.solvers import DENSE_MAX

    row = layer_row(name, mask, weight, get_gate("neurips23"), DENSE_MAX, "fs")
    if any(v.startswith("solver failed: ") for v in row.reasons.values()):
        return LayerScore(0.0, 0.0, None)
    coord = row.coordinate or (0.0, 0.0, 0.0, 0.0)
    return LayerScore(float(row.imdb_r or 0.0), float(coord[0]),
                      None if row.coordinate_norm is None else float(row.coordinate_norm))


def _rows(graph, arrays, dtype):
    """Layer name -> ``(C_out, fan_in)`` contiguous array (masks as bool, weights as |w|)."""
    out = {}
    for name, layer in graph.layers.items():
        a = np.asarray(arrays[name], dtype=dtype).reshape(layer.out_channels, -1)
        out[name] = np.ascontiguousarray(np.abs(a) if dtype is np.float64 else a)
    return out


def layer_scores(graph, masks, weights, *, layers=None, workers: int | None = None) -> dict:
    """Layer name -> :class:`LayerScore` of `masks` with `weights` (threads over layers).

    Parameters
    ----------
    graph : NetGraph
    masks : MaskSet or mapping
    weights : mapping of layer name -> ndarray
        The weights of every layer (``|W * M|`` is scored).
    layers : iterable of str, optional
        Only these layers (default: all).
    workers : int, optional
        Threads (default: up to 4); the result does not depend on it.
    """
    names = list(graph.layers if layers is None else layers)
    return _scores(names, _rows(graph, masks, bool), _rows(graph, weights, np.float64), workers)


_ABSW = None  # |W| of the run, in a worker process


def _init_worker(absw):
    global _ABSW
    _ABSW = absw


def _score_job(names, rows, workers, absw=None):
    """(scores, seconds) of one candidate; in a worker process `absw` is the one it was given."""
    t0 = time.perf_counter()
    scores = _scores(names, rows, _ABSW if absw is None else absw, workers)
    return scores, time.perf_counter() - t0


def _scores(names, rows, absw, workers):
    from threadpoolctl import threadpool_limits

    workers = workers or min(4, len(names) or 1)
    if workers <= 1 or len(names) <= 1:  # one BLAS thread: the blocks are small (docs/pags.md)
        with threadpool_limits(1):
            return {n: _score(n, rows[n], absw[n]) for n in names}
    with threadpool_limits(1), ThreadPoolExecutor(workers) as pool:
        return dict(zip(names, pool.map(lambda n: _score(n, rows[n], absw[n]), names)))


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class PAGSLayer:
    """One layer of a PAGS run.

    Attributes
    ----------
    layer : str
    source : int
        Which mask the layer comes from: 0 the base, k the k-th candidate.
    replaced : int
        How many times a candidate replaced the layer.
    base_imdb_r, base_norm : float
        The base mask's IMDB_r and S in this layer.
    imdb_r, delta_r, norm : float
        The final mask's.
    base_kept, kept : int
        Kept weights of the base and of the final mask.
    density : float
        ``kept / numel``.
    drift : int
        ``kept - base_kept``.
    """

    layer: str
    source: int
    replaced: int
    base_imdb_r: float
    base_norm: float | None
    imdb_r: float
    delta_r: float
    norm: float | None
    base_kept: int
    kept: int
    density: float
    drift: int


@dataclass(frozen=True)
class PAGSResult:
    """PAGS masks with the per-layer provenance, the density drift and the explored fraction.

    ``explored`` is the fraction of all weights that the base or some candidate kept;
    ``metric_seconds`` the time spent on the spectral scores, ``candidate_seconds`` on drawing
    candidates.
    """

    masks: MaskSet
    layers: tuple[PAGSLayer, ...]
    base: str
    rule: str
    population: int
    numel: int
    explored: float
    metric_seconds: float
    candidate_seconds: float
    seconds: float

    @property
    def base_kept(self) -> int:
        return sum(row.base_kept for row in self.layers)

    @property
    def kept(self) -> int:
        return sum(row.kept for row in self.layers)

    @property
    def density(self) -> float:
        return self.kept / self.numel

    @property
    def target_density(self) -> float:
        """The base mask's total density."""
        return self.base_kept / self.numel

    @property
    def total_drift(self) -> int:
        """Total kept minus the base's."""
        return self.kept - self.base_kept

    def rows(self) -> list[dict]:
        return [asdict(row) for row in self.layers]

    def table(self) -> str:
        from ..report.tables import format_table

        replaced = sum(row.source > 0 for row in self.layers)
        return "\n".join([
            format_table(self.rows()), "",
            f"pags on {self.base}, rule {self.rule}, {self.population} candidates: "
            f"{replaced} of {len(self.layers)} layers replaced; density {self.density:.6g} "
            f"(base {self.target_density:.6g}, drift {self.total_drift:+d} weights); "
            f"explored {self.explored:.4g} of the weights",
        ])

    def to_dict(self) -> dict:
        return jsonable({
            "base": self.base, "rule": self.rule, "population": self.population,
            "numel": self.numel, "base_kept": self.base_kept, "kept": self.kept,
            "density": self.density, "target_density": self.target_density,
            "total_drift": self.total_drift, "explored": self.explored,
            "metric_seconds": self.metric_seconds, "candidate_seconds": self.candidate_seconds,
            "seconds": self.seconds, "layers": self.rows(),
        })


# ------------------------------------------------------------------------------ selection
def select(graph, weights, base_masks, candidates: Iterable, *, rule: str = "imdb",
           base: str = "given", population: int | None = None, workers: int | None = None,
           processes: int = 0, progress: bool = False) -> PAGSResult:
    """PAGS selection over given candidate masks (the loop of the module docstring).

    Parameters
    ----------
    graph : NetGraph
    weights : mapping of layer name -> ndarray
        The weights the scores read (``|W * M|``).
    base_masks : MaskSet or mapping
    candidates : iterable of MaskSet
        Visited in order (a generator is consumed lazily).
    rule : {"imdb", "delta_r"}
    base : str
        The base method's name, for the report.
    population : int, optional
        The number of candidates, for the progress bar.
    workers : int, optional
        Threads over layers for the scores.
    processes : int
        Score candidates in this many worker processes while the next ones are drawn (0: in
        this process). The selection still visits candidates in order: the result does not
        depend on it, and ``metric_seconds`` sums the workers' scoring time.
    progress : bool
        A bar over the candidates on stderr (when it is a terminal).

    Returns
    -------
    PAGSResult
    """
    from .._progress import bar

    if rule not in RULES:
        raise UnknownMethodError(f"unknown PAGS rule {rule!r}; use one of {list(RULES)}")
    if int(processes) < 0:
        raise GraphpaiError(f"pags processes must be >= 0, got {processes}")
    if processes and workers is None:
        workers = 1  # one thread per worker process
    start = time.perf_counter()
    names = list(graph.layers)
    absw = _rows(graph, weights, np.float64)  # |W| once for the run
    current = {n: np.asarray(base_masks[n], dtype=bool) for n in names}
    explored = {n: current[n].copy() for n in names}
    t0 = time.perf_counter()
    best = _scores(names, _rows(graph, current, bool), absw, workers)
    metric = [time.perf_counter() - t0]
    first = dict(best)
    source = {n: 0 for n in names}
    replaced = {n: 0 for n in names}
    drawn = 0.0
    count = 0

    def apply(number, masks, scores, seconds):
        metric[0] += seconds
        for n in names:
            explored[n] |= masks[n]
            if accepts(scores[n], best[n], rule):
                current[n], best[n] = masks[n], scores[n]
                source[n] = number
                replaced[n] += 1

    pool, pending = None, deque()
    if processes:  # candidates are scored independently of the selection, so in parallel
        import multiprocessing

        pool = ProcessPoolExecutor(int(processes), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(absw,))
    iterator = iter(candidates)
    try:
        with bar(None, progress, total=population, desc="pags", unit="mask") as b:
            while True:
                t0 = time.perf_counter()
                try:
                    masks = next(iterator)
                except StopIteration:
                    break
                drawn += time.perf_counter() - t0
                count += 1
                masks = {n: np.asarray(masks[n], dtype=bool) for n in names}
                rows = _rows(graph, masks, bool)
                if pool is None:
                    apply(count, masks, *_score_job(names, rows, workers, absw))
                    b.update(1)
                    continue
                pending.append((count, masks, pool.submit(_score_job, names, rows, workers)))
                while len(pending) > 2 * int(processes) or (pending and pending[0][2].done()):
                    number, masks, future = pending.popleft()
                    apply(number, masks, *future.result())
                    b.update(1)
            while pending:  # in candidate order, whatever order the workers finish in
                number, masks, future = pending.popleft()
                apply(number, masks, *future.result())
                b.update(1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    metric = metric[0]
    numel = sum(graph.layers[n].numel for n in names)
    rows = tuple(
        PAGSLayer(n, source[n], replaced[n], first[n].imdb_r, first[n].norm, best[n].imdb_r,
                  best[n].delta_r, best[n].norm, int(np.asarray(base_masks[n]).sum()),
                  int(current[n].sum()), float(current[n].sum() / current[n].size),
                  int(current[n].sum()) - int(np.asarray(base_masks[n]).sum()))
        for n in names)
    return PAGSResult(MaskSet(current), rows, base, rule, count, numel,
                      sum(int(e.sum()) for e in explored.values()) / numel, metric, drawn,
                      time.perf_counter() - start)


# ------------------------------------------------------------------------------ candidates
def _batch_pool(data):
    """All (x, y) of the prune batches, concatenated (torch tensors)."""
    import torch

    xs, ys = [], []
    for x, y in data:
        xs.append(torch.as_tensor(x))
        ys.append(torch.as_tensor(y))
    if not xs:
        raise DataError("PAGS got empty prune data; pass batches of (inputs, labels)")
    return torch.cat(xs), torch.cat(ys)


def _noisy(model, noise: float, seed: int):
    """A copy of `model` with every prunable weight times (1 + noise * N(0, 1))."""
    import copy

    import torch

    from ..torch.extract import layer_parameters

    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module, attr, _ in layer_parameters(clone).values():
            w = getattr(module, f"{attr}_orig", None)
            w = getattr(module, attr) if w is None else w
            eps = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
            w.mul_(1 + noise * eps)
    return clone


def _candidates(model, graph, method, compression, budget, rng, population, data, batch_k,
                noise, classes, input_shape, options):
    """Yield `population` candidate masks of `method` (module docstring)."""
    import torch

    from ..prune import prune

    if method.kind == "placement":
        for _ in range(population):
            yield prune(graph, method.name, budget=budget, seed=int(rng.integers(2 ** 63)),
                        **options)
        return
    if method.needs_data:
        x, y = _batch_pool(data)
        size = min(int(batch_k * classes), len(x))
        for _ in range(population):
            pick = np.sort(rng.choice(len(x), size=size, replace=False))
            index = torch.as_tensor(pick)
            yield method.func(model, compression, seed=int(rng.integers(2 ** 63)),
                              data=[(x[index], y[index])], input_shape=input_shape, **options)
        return
    for _ in range(population):
        s = int(rng.integers(2 ** 63))
        net = _noisy(model, noise, s) if noise else model
        yield method.func(net, compression, seed=s, data=None, input_shape=input_shape,
                          **options)


def solve_pags(model, compression, *, seed=None, data=None, input_shape=None, base: str = "rpi",
               budget="erk", population: int = 2000, rule: str = "imdb", batch_k: int = 1,
               noise: float = 1e-3, base_options=None, workers: int | None = None,
               processes: int = 0, progress: bool = False) -> PAGSResult:
    """PAGS masks for a torch model, with provenance, drift and explored fraction ([FS]).

    Parameters
    ----------
    model : torch.nn.Module
        Its current weights are scored (``|W * M|``) and ranked by ranking base methods.
    compression : float or str
        Target compression of the base method.
    seed : int or numpy.random.Generator, optional
        The base mask's seed and every candidate draw.
    data : iterable of (inputs, labels), optional
        The prune data of SNIP/GraSP (the base uses all of it, a candidate ``batch_k * classes``
        images of it drawn at random).
    input_shape : tuple of int, optional
    base : str
        A registered method: ranking (``snip``, ``grasp``, ``synflow``, ``magnitude``) or
        placement (``rpi``, ``mica``, ...).
    budget : str
        The budget of a placement base (``"erk"``, ``"igq"``, ...).
    population : int
        Candidates drawn ([FS]: 2000).
    rule : {"imdb", "delta_r"}
    batch_k : int
        Images per class in a candidate's mini-batch.
    noise : float
        SynFlow (and magnitude) candidates: multiplicative weight noise ``w (1 + noise e)``,
        ``e ~ N(0, 1)`` ([FS]'s code uses 1e-3).
    base_options : mapping, optional
        Options of the base method, for the base and every candidate (``iterations`` for
        synflow, ``temperature`` for grasp, ``node_selection`` for mica, ...).
    workers : int, optional
        Threads over layers for the scores.
    processes : int
        Worker processes that score candidates (see :func:`select`).
    progress : bool

    Returns
    -------
    PAGSResult

    Raises
    ------
    UnknownMethodError
        If `base` or `rule` is unknown, or `base` is ``pags``.
    DataError
        If a data-hungry base gets no data.
    """
    from ..graph import NetGraph
    from ..prune import prune
    from ..torch.extract import layer_weights, to_graph

    if isinstance(model, NetGraph):
        raise ModelError("pags scores |W * M| with the model's weights; pass the nn.Module, not "
                         "its NetGraph")
    method = get_generator(base)
    if method.name == "pags":
        raise UnknownMethodError("pags cannot be its own base; choose e.g. base='snip' or 'rpi'")
    if rule not in RULES:
        raise UnknownMethodError(f"unknown PAGS rule {rule!r}; use one of {list(RULES)}")
    if int(population) < 0 or int(batch_k) < 1 or not (noise >= 0 and math.isfinite(noise)):
        raise GraphpaiError(f"pags needs population >= 0, batch_k >= 1 and noise >= 0 (got "
                            f"{population}, {batch_k}, {noise})")
    if method.needs_data and data is None:
        raise DataError(f"pags with base {method.name!r} needs prune batches: pass data= (an "
                        "iterable of (inputs, labels)) or use a data-free base such as 'rpi'")
    options = dict(base_options or {})  # checked by prune() on the base mask, before candidates
    start = time.perf_counter()
    graph = to_graph(model, input_shape)
    rng = np.random.default_rng(seed)
    base_seed = int(rng.integers(2 ** 63))
    t0 = time.perf_counter()
    if method.kind == "placement":
        from ..prune import resolve_budget

        chosen = resolve_budget(model, budget, compression, seed=base_seed, data=data,
                                input_shape=input_shape, graph=graph)
        base_masks = prune(graph, method.name, budget=chosen, seed=base_seed, **options)
    else:
        chosen = None
        base_masks = prune(model, method.name, compression=compression, seed=base_seed,
                           data=data, input_shape=input_shape, **options)
    first = time.perf_counter() - t0
    classes = sum(graph.groups[name].channels for name in graph.outputs)
    weights = layer_weights(model)
    found = select(graph, weights, base_masks,
                   _candidates(model, graph, method, compression, chosen, rng, int(population),
                               data, batch_k, noise, classes, input_shape, options),
                   rule=rule, base=method.name, population=int(population), workers=workers,
                   processes=processes, progress=progress)
    return PAGSResult(found.masks, found.layers, found.base, found.rule, found.population,
                      found.numel, found.explored, found.metric_seconds,
                      found.candidate_seconds + first, time.perf_counter() - start)


@register("pags", kind="ranking")
def pags(model, compression, *, seed=None, data=None, input_shape=None, base: str = "rpi",
         budget="erk", population: int = 2000, rule: str = "imdb", batch_k: int = 1,
         noise: float = 1e-3, base_options=None, workers: int | None = None,
         processes: int = 0, progress: bool = False) -> MaskSet:
    """PAGS masks ([FS]): :func:`solve_pags` without the report (docs/pags.md)."""
    return solve_pags(model, compression, seed=seed, data=data, input_shape=input_shape,
                      base=base, budget=budget, population=population, rule=rule,
                      batch_k=batch_k, noise=noise, base_options=base_options,
                      workers=workers, processes=processes, progress=progress).masks
