"""graphpai: graph-theoretic audits, spectral metrics and mask generators for sparse neural
networks pruned at initialization.

The core (graph, masks, functional edges, paths, spectral metrics, budgets, generators) needs
numpy and scipy only; torch is imported by the adapter, ``graphpai.torch``, when it is used.
docs/definitions.md defines every quantity; docstrings link to its sections.
"""

from .errors import (BudgetError, DataError, GraphpaiError, MaskError, ModelError, SolverError,
                     UnknownMethodError, UnknownModelError, UnsupportedOpError)
from .graph import Group, Layer, Link, NetGraph, as_graph
from .masks import MaskSet
from .functional import AuditResult, audit
from . import budgets, paths, prune, spectral  # callable modules: graphpai.paths(net, masks), ...


def to_graph(model, input_shape=None, **options) -> NetGraph:
    """The NetGraph of a torch model (docs/definitions.md#graph); see
    :func:`graphpai.torch.extract.to_graph` for the options (``example_inputs``,
    ``input_dtype``, ``vocab_size``, ``tracer``, ``prune_embeddings``)."""
    from .torch.extract import to_graph as _to_graph

    return _to_graph(model, input_shape, **options)


__version__ = "0.1.0"

__all__ = [
    "NetGraph", "Group", "Layer", "Link", "MaskSet", "to_graph", "as_graph",
    "audit", "AuditResult", "paths", "spectral", "prune", "budgets",
    "GraphpaiError", "MaskError", "ModelError", "UnsupportedOpError", "UnknownModelError",
    "UnknownMethodError", "BudgetError", "DataError", "SolverError",
]
