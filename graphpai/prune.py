"""``graphpai.prune``: one entry point for every mask generator (docs/definitions.md#budgets,
#generators).

The module is callable: ``graphpai.prune(model, "snip", compression=100, data=batches)`` is
:func:`prune`, and ``graphpai.prune.resolve_budget`` is reachable too.
"""

from __future__ import annotations

import inspect
from typing import Mapping

from ._callable import callable_module
from .budgets import BUDGETS, Budget, check_compression, from_mask, make_budget
from .errors import BudgetError, DataError, GraphpaiError, ModelError, UnknownMethodError
from .generators import GENERATORS, get_generator
from .graph import NetGraph, as_graph
from .masks import MaskSet

__all__ = ["prune", "resolve_budget"]


def prune(net_or_model, method: str, *, budget=None, compression=None, seed=None, data=None,
          input_shape=None, **options) -> MaskSet:
    """Generate a mask with a registered method (docs/definitions.md#generators).

    Parameters
    ----------
    net_or_model : torch.nn.Module or NetGraph
        Placement methods (``rpi``, ``mica``) need only the graph (a model is converted with
        :func:`~graphpai.graph.as_graph`); ranking methods (``magnitude``, ``snip``, ``grasp``,
        ``synflow``) score the weights of a torch model.
    method : str
        A key of ``graphpai.generators.GENERATORS``.
    budget : str, Budget, MaskSet or None
        Placement methods only: a budget name (``"uniform"``, ``"erk"``, ``"igq"``, ``"epl"``), a
        method name for that method's per-layer counts at the same compression (``budget="snip"``
        with ``method="rpi"`` is RPI-SNIP), a mask (from-mask: its per-layer counts) or a ready
        :class:`~graphpai.budgets.Budget`. None: the method's default (ERK for rpi).
    compression : float or str
        Target compression in [1, N] (``1000``, ``"1e3"``, ``"10^3"``). Leave it out when
        `budget` is a mask or a Budget, which fix it.
    seed : int or numpy.random.Generator, optional
        Every random choice. Placements (``rpi``, ``mica``) draw only from a numpy Generator, so
        the same seed gives the same mask on every machine; ranking masks are deterministic too,
        but their float scores, and so the order of near ties, can differ between devices and
        BLAS builds.
    data : iterable of (inputs, labels), optional
        Prune batches for SNIP and GraSP (also for a ``budget="snip"``); see
        :func:`graphpai.torch.data.synthetic_batches` for demos.
    input_shape : tuple of int, optional
        One input without the batch dimension, for models that do not carry ``input_shape``.
    **options
        Passed to the method (``temperature`` for grasp, ``iterations`` for synflow, ...).

    Returns
    -------
    MaskSet

    Raises
    ------
    UnknownMethodError
        If `method`, a budget name or an option is unknown; the message lists the known ones.
    BudgetError
        If the compression is outside [1, N] or missing, or a budget is given to a ranking method.
    DataError
        If SNIP or GraSP get no data.
    ModelError
        If a ranking method gets a NetGraph instead of a model.

    Examples
    --------
    >>> from graphpai.graph import Group, Layer, NetGraph
    >>> layers = [Layer("a", "linear", (8, 8), "x", "h"), Layer("b", "linear", (2, 8), "h", "y")]
    >>> g = NetGraph([Group("x", 8), Group("h", 8), Group("y", 2)], layers, [], ["x"], ["y"])
    >>> prune(g, "rpi", budget="uniform", compression=4, seed=0).counts()
    {'a': 16, 'b': 4}
    """
    generator = get_generator(method)
    _check_options(generator, options)
    if generator.kind == "ranking":
        if budget is not None:
            raise BudgetError(
                f"{generator.name} ranks all weights globally and takes no budget; to place "
                f"{generator.name}'s per-layer counts at random use method='rpi', "
                f"budget='{generator.name}'"
            )
        if compression is None:
            raise BudgetError(f"{generator.name} needs compression= (like 100, '1e2' or '10^2')")
        if isinstance(net_or_model, NetGraph):
            raise ModelError(f"{generator.name} scores the weights of a torch model; pass the "
                             "nn.Module itself, not its NetGraph")
        from .torch.extract import layer_parameters  # ranking needs torch anyway
        from .torch.masks import layer_modules, layer_names

        names = set(layer_modules(net_or_model, input_shape=input_shape, warn=False)) | set(
            layer_names(net_or_model, input_shape=input_shape))
        n = sum(getattr(m, attr + "_orig", getattr(m, attr)).numel()
                for name, (m, attr, _) in layer_parameters(net_or_model).items() if name in names)
        compression = check_compression(compression, n)  # before any scoring work
        if generator.needs_data and data is None:
            raise DataError(
                f"{generator.name} needs batches: pass data=, an iterable of (inputs, labels) such "
                "as a DataLoader, or for a demo graphpai.torch.data.synthetic_batches(input_shape, "
                "num_classes) (docs/definitions.md#training uses 10 x classes images)"
            )
        return generator.func(net_or_model, compression, seed=seed, data=data,
                              input_shape=input_shape, **options)

    graph = as_graph(net_or_model, input_shape)
    chosen = resolve_budget(net_or_model, generator.default_budget if budget is None else budget,
                            compression, seed=seed, data=data, input_shape=input_shape, graph=graph)
    masks = generator.func(graph, chosen, seed=seed, **options)
    masks = masks if isinstance(masks, MaskSet) else MaskSet(masks)
    masks.validate(graph)
    broken = {k: (masks.kept(k), n) for k, n in chosen.counts.items() if masks.kept(k) != n}
    if broken and generator.exact_budget:
        raise GraphpaiError(f"method {generator.name!r} did not keep its budget (layer: (kept, "
                            f"budget)) {broken}; this is a bug in the generator")
    return masks


def _check_options(generator, options) -> None:
    """UnknownMethodError naming the options `generator` does not take (not a bare TypeError)."""
    params = inspect.signature(generator.func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    taken = {"seed", "data", "input_shape"}  # prune's own keywords
    known = [name for name, p in params.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in taken]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UnknownMethodError(
            f"method {generator.name!r} takes no option {', '.join(map(repr, unknown))}; its "
            f"options: {', '.join(known) or 'none'}"
        )


def resolve_budget(net_or_model, budget, compression=None, *, seed=None, data=None,
                   input_shape=None, graph=None) -> Budget:
    """The :class:`~graphpai.budgets.Budget` that `budget` names for this network
    (docs/definitions.md#budgets).

    Parameters
    ----------
    net_or_model : torch.nn.Module or NetGraph
    budget : str, Budget or mask
        A key of ``graphpai.budgets.BUDGETS``; a method name (its mask's per-layer counts at
        `compression`, made with the same `seed` and `data`); a MaskSet or mapping of masks; or a
        Budget (checked against the graph).
    compression : float or str, optional
        Required for names, refused for masks and Budgets (they fix it).
    seed, data, input_shape
        As in :func:`prune`, used when `budget` is a method name.
    graph : NetGraph, optional
        The graph of `net_or_model` if already built.

    Raises
    ------
    UnknownMethodError
        If a name is neither a budget nor a method; the message lists both.
    BudgetError
        If the compression is missing, out of range, or given with a mask or Budget.
    """
    graph = graph if graph is not None else as_graph(net_or_model, input_shape)
    if isinstance(budget, (Budget, Mapping)):
        if compression is not None:
            raise BudgetError("this budget already fixes the compression; leave compression out "
                              "when budget is a mask or a Budget")
        if isinstance(budget, Budget):
            return budget.check(graph)
        return from_mask(budget, graph)
    if not isinstance(budget, str):
        raise UnknownMethodError(f"budget {budget!r} is not a budget name, a mask or a Budget")
    key = budget.lower()
    if key not in BUDGETS and key not in GENERATORS:
        raise UnknownMethodError(
            f"unknown budget {budget!r}; known budgets: {', '.join(sorted(BUDGETS))}; or a "
            f"method's per-layer counts: {', '.join(sorted(GENERATORS))}; or a MaskSet"
        )
    if compression is None:
        raise BudgetError(f"budget {budget!r} needs compression= (like 100, '1e2' or '10^2')")
    compression = check_compression(compression, graph.num_weights)
    if key in BUDGETS:
        return make_budget(graph, key, compression)
    masks = prune(net_or_model, key, compression=compression, seed=seed, data=data,
                  input_shape=input_shape)
    return from_mask(masks, graph, source=key)


callable_module(__name__, prune)
