"""The registry of mask generators: method name -> :class:`Generator`
(docs/definitions.md#generators).

Two kinds of method exist:

- ``"placement"``: places a given per-layer budget on the graph, ``fn(graph, budget, *, seed=None,
  **options) -> MaskSet`` with ``budget`` a :class:`~graphpai.budgets.Budget`. It must keep
  exactly ``budget.counts[l]`` weights in every layer. RPI and MiCA are placements; their default
  budget is used when ``prune`` gets none.
- ``"ranking"``: scores the weights of a torch model and keeps the best globally, ``fn(model,
  compression, *, seed=None, data=None, input_shape=None, **options) -> MaskSet``.

Adding a method is one decorator on a function in any imported module (every module of
``graphpai.generators`` is imported with the package)::

    @register("mica")
    def mica(graph, budget, *, seed=None, mode="rand") -> MaskSet: ...

after which ``prune(model, "mica", budget="erk", compression=100)`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import UnknownMethodError

__all__ = ["Generator", "GENERATORS", "register", "get_generator", "methods_used"]

KINDS = ("placement", "ranking")


@dataclass(frozen=True)
class Generator:
    """One registered method: its name, function and kind.

    Attributes
    ----------
    name : str
        The key in ``GENERATORS``.
    func : callable
        The function the decorator was put on.
    kind : {"placement", "ranking"}
        What `func` takes (see the module docstring).
    default_budget : str or None
        Budget name a placement uses when none is given.
    needs_data : bool
        A ranking method that needs batches (SNIP, GraSP).
    exact_budget : bool
        A placement that keeps exactly its budget in every layer (``prune`` checks it); False
        for one that may move weights between layers and reports the drift (NPB).
    """

    name: str
    func: Callable
    kind: str
    default_budget: str | None = None
    needs_data: bool = False
    exact_budget: bool = True


GENERATORS: dict[str, Generator] = {}


def register(name: str, *, kind: str = "placement", default_budget: str | None = "erk",
             needs_data: bool = False, exact_budget: bool = True):
    """Decorator that adds a function to ``GENERATORS`` under `name` and returns it unchanged.

    Parameters
    ----------
    name : str
        Lower-case method name; must not be taken by a method or a budget.
    kind : {"placement", "ranking"}
    default_budget : str or None
        For placements: the budget used when ``prune`` gets none. Ignored for ranking methods.
    needs_data : bool
        For ranking methods that need batches of (x, y).
    exact_budget : bool
        False for a placement whose per-layer counts may drift from the budget.

    Raises
    ------
    ValueError
        If the name is taken or `kind` is unknown (a programming error, not a user error).
    """
    from ..budgets import BUDGETS

    if kind not in KINDS:
        raise ValueError(f"generator kind {kind!r} is not one of {KINDS}")
    if name != name.lower():
        raise ValueError(f"generator name {name!r} must be lower case")
    if name in GENERATORS or name in BUDGETS:
        raise ValueError(f"generator {name!r} registered twice (or named like a budget)")

    def add(fn):
        GENERATORS[name] = Generator(name, fn, kind,
                                     default_budget if kind == "placement" else None, needs_data,
                                     exact_budget)
        return fn

    return add


def get_generator(name: str) -> Generator:
    """The registered method `name` (case-insensitive).

    Raises
    ------
    UnknownMethodError
        If no method has that name; the message lists the known ones.
    """
    key = name.lower() if isinstance(name, str) else name
    try:
        return GENERATORS[key]
    except (KeyError, TypeError):
        raise UnknownMethodError(
            f"unknown pruning method {name!r}; known methods: {', '.join(sorted(GENERATORS))}"
        ) from None


def methods_used(method: str, budget=None, options=None) -> list[Generator]:
    """Every registered method a run of `method` calls: `method` itself, the method whose counts
    its `budget` takes when the budget names one (RPI-SNIP), and the ``base`` method of a method
    built on another (PAGS), so that a caller can tell whether any needs prune batches.

    >>> [g.name for g in methods_used("pags", options={"base": "snip"})]
    ['pags', 'snip']
    """
    used = [get_generator(method)]
    if isinstance(budget, str) and budget.lower() in GENERATORS:
        used.append(GENERATORS[budget.lower()])
    base = (options or {}).get("base")
    if isinstance(base, str):
        used.append(get_generator(base))
    return used
