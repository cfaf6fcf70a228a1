"""Errors graphpai raises on purpose.

Every message names the thing that was wrong, the values involved and what to do next. The CLI
prints the message of a :class:`GraphpaiError` on one line and exits with status 2.
"""

__all__ = [
    "GraphpaiError",
    "MaskError",
    "ModelError",
    "UnsupportedOpError",
    "UnknownModelError",
    "UnknownMethodError",
    "BudgetError",
    "DataError",
    "SolverError",
    "OutputError",
    "TrainError",
    "StudyError",
]


class GraphpaiError(Exception):
    """Base class of every error graphpai raises on purpose."""


class MaskError(GraphpaiError, ValueError):
    """A mask does not fit the graph: shape, values, unknown or missing layer."""


class ModelError(GraphpaiError, ValueError):
    """A model cannot be turned into a graph (tracing failed, bad input shape)."""


class UnsupportedOpError(ModelError):
    """An operation on the path between prunable layers has no graph semantics."""


class UnknownModelError(GraphpaiError, KeyError):
    """A model name that is not in the zoo."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class UnknownMethodError(GraphpaiError, KeyError):
    """A pruning method, budget or profile name that is not registered."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class BudgetError(GraphpaiError, ValueError):
    """A compression or budget outside what the network allows."""


class DataError(GraphpaiError, ValueError):
    """Data is missing or malformed (for example SNIP without batches)."""


class SolverError(GraphpaiError, RuntimeError):
    """The singular values of a layer did not converge."""

    def __init__(self, layer, reason, partial=None):
        super().__init__(f"layer {layer!r}: singular values did not converge ({reason})")
        self.layer, self.reason, self.partial = layer, reason, partial


class OutputError(GraphpaiError, OSError):
    """A result or mask file cannot be written there (a directory, no permission, no folder)."""


class StudyError(GraphpaiError, ValueError):
    """A study cannot run as asked: an unreadable grid, or an output directory that holds a
    different study."""


class TrainError(GraphpaiError, ValueError):
    """Training cannot run as asked: a recipe value out of range, an absent device, or a
    checkpoint made with other settings."""
