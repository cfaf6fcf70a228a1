"""The points of a study and their keys (docs/study.md).

A study evaluates every combination of model, method, budget, compression and seed. Each
combination is a :class:`Point`; its :attr:`Point.key` hashes every parameter that changes a
number (the generator options, which measures are taken and their settings, graphpai's version and
`DEFINITIONS_VERSION`), so a store can skip finished points and never confuses two definitions of
one point (open_lth's hashed run names).

Compressions are read by :func:`parse_compressions`: ``"0.5:6:0.5"`` is log10 start:stop:step
(inclusive), ``"1e2,1e3,10^3.5"`` a list; both forms can be mixed (``"1:3:1,10^3.5"``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..budgets import parse_compression
from ..errors import BudgetError, StudyError, UnknownMethodError

__all__ = ["Point", "grid", "parse_compressions", "parse_seeds", "parse_options", "DEFINITIONS_VERSION",
           "MAX_POINTS", "method_options", "parse_dsts", "DSTS"]

DEFINITIONS_VERSION = 1
"""Version of what the study's columns mean (the metric definitions behind them); raised whenever
a definition changes a number, so that old rows are never mixed with new ones."""

MAX_POINTS = 100_000
"""Largest compression range :func:`parse_compressions` expands (a typo guard)."""

_DIGITS = 10  # log10 exponents of a range are rounded to this many decimals (float-safe steps)


def _frozen(mapping) -> tuple[tuple[str, Any], ...]:
    """A mapping as sorted (name, value) pairs, with values checked to be JSON-able."""
    items = tuple(sorted(dict(mapping or {}).items()))
    try:
        json.dumps(dict(items), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise StudyError(f"options {dict(items)!r} must be JSON values (numbers, strings, "
                         "booleans, lists)") from None
    return items


@dataclass(frozen=True)
class Point:
    """One evaluation of a study: a mask and what is measured on it.

    Attributes
    ----------
    model : str
        A zoo model name (``graphpai models``).
    method : str
        A key of ``graphpai.generators.GENERATORS``.
    budget : str or None
        The layerwise budget of a placement method (``"erk"``, ``"igq"``, ... or a method name
        for RPI-X); None for ranking methods, which take none.
    compression : float
        Target direct compression N/|M|.
    seed : int
        Seeds the model's initial weights and the mask.
    options : tuple of (name, value)
        Generator options (``node_selection`` for MiCA, ...), sorted; `option_dict` gives the mapping.
    measures : tuple of str
        Measures taken besides the channel audit (keys of ``graphpai.study.measure.MEASURES``),
        sorted.
    settings : tuple of (name, value)
        Parameters of the measures (for example a training recipe), sorted.
    dst : {None, "set", "rigl"}
        How a trained point trains its mask: None keeps it fixed (static PaI), ``"set"`` and
        ``"rigl"`` are dynamic sparse training from it (docs/dst.md). A grid axis, so one study
        compares static and dynamic training from the same initial masks.
    """

    model: str
    method: str
    budget: str | None
    compression: float
    seed: int
    options: tuple = ()
    measures: tuple = ()
    settings: tuple = ()
    dst: str | None = None
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "compression", float(self.compression))
        set_(self, "seed", int(self.seed))
        set_(self, "options", _frozen(self.options))
        set_(self, "settings", _frozen(self.settings))
        set_(self, "measures", tuple(sorted(set(self.measures))))
        set_(self, "key", _key(self))

    @property
    def option_dict(self) -> dict:
        return dict(self.options)

    @property
    def setting_dict(self) -> dict:
        return dict(self.settings)

    @property
    def log10_compression(self) -> float:
        return round(math.log10(self.compression), _DIGITS)

    @property
    def label(self) -> str:
        """Short human name, e.g. ``rpi-erk 10^3 seed 0``."""
        name = self.method + (f"-{self.budget}" if self.budget else "")
        name += f" {self.dst}" if self.dst else ""
        return f"{name} 10^{self.log10_compression:g} seed {self.seed}"

    def definition(self) -> dict:
        """The parameters that give a point's numbers their meaning, apart from the grid axes
        (method, budget, compression, seed): a store holds points of one definition only."""
        from .. import __version__

        return {"model": self.model, "options": self.option_dict, "measures": list(self.measures),
                "settings": self.setting_dict, "graphpai_version": __version__,
                "definitions_version": DEFINITIONS_VERSION}


def _key(point: Point) -> str:
    """sha256 of every parameter that changes a number; compressions equal to 12 significant
    digits (``1e3``, ``10^3`` and a range's ``10**3.0``) share a key."""
    payload = {**point.definition(), "method": point.method, "budget": point.budget,
               "compression": f"{point.compression:.12g}", "seed": point.seed}
    if point.dst is not None:  # static points keep the keys they had before DST was an axis
        payload["dst"] = point.dst
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------ parsing
def _range(text: str) -> list[float]:
    parts = text.split(":")
    hint = ("write a range as log10 start:stop:step with step > 0 and start <= stop, "
            "e.g. 0.5:6:0.5 for 10^0.5 .. 10^6")
    if len(parts) != 3:
        raise StudyError(f"cannot read compression range {text!r}: {hint}")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise StudyError(f"cannot read compression range {text!r}: {hint}") from None
    if not all(map(math.isfinite, (start, stop, step))) or step <= 0 or stop < start:
        raise StudyError(f"cannot read compression range {text!r}: {hint}")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_POINTS:
        raise StudyError(f"compression range {text!r} has {count:,} points (at most "
                         f"{MAX_POINTS:,}); use a larger step")
    return [round(start + i * step, _DIGITS) for i in range(count)]


def parse_compressions(text) -> tuple[float, ...]:
    """Target compressions from ``"0.5:6:0.5"`` (log10 start:stop:step, inclusive) or a list.

    Items are separated by commas; an item is a log10 range or a compression written as
    ``1000``, ``1e3`` or ``10^3`` (as ``graphpai prune --compression`` reads it). Duplicates are
    dropped; the order is increasing.

    Raises
    ------
    StudyError
        If an item cannot be read, a range runs backwards or has a step <= 0, or a compression
        is below 1.

    Examples
    --------
    >>> parse_compressions("1:2:0.5")
    (10.0, 31.622776601683793, 100.0)
    >>> parse_compressions("1e2,10^3,1000")
    (100.0, 1000.0)
    """
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    values = {}
    for item in items:
        if isinstance(item, str) and ":" in item:
            for x in _range(item.strip()):
                values[f"{10.0 ** x:.12g}"] = 10.0 ** x
            continue
        if isinstance(item, str) and not item.strip():
            raise StudyError(f"empty compression in {text!r}; separate values by single commas")
        try:
            c = parse_compression(item.strip() if isinstance(item, str) else item)
        except BudgetError as exc:
            raise StudyError(f"{exc}, or a log10 range start:stop:step such as 0.5:6:0.5") from None
        values.setdefault(f"{c:.12g}", c)
    out = tuple(sorted(values.values()))
    if not out:
        raise StudyError("no compression given; write e.g. 1:4:0.5 or 1e2,1e3")
    low = [c for c in out if c < 1]
    if low:
        raise StudyError(f"compression {low[0]:g} is below 1 (1 keeps every weight); log10 "
                         f"ranges start at 0 or above")
    return out


def parse_seeds(text) -> tuple[int, ...]:
    """Seeds from ``"0,1000,2000"`` (integers, duplicates dropped, order kept)."""
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        seeds = [int(str(s).strip()) for s in items]
    except ValueError:
        raise StudyError(f"cannot read seeds {text!r}; write integers like 0,1000,2000") from None
    if not seeds or min(seeds) < 0:
        raise StudyError(f"seeds {text!r} must be integers >= 0, like 0,1000,2000")
    return tuple(dict.fromkeys(seeds))


def parse_options(items) -> dict:
    """Generator options from ``["node_selection=min", "iterations=50"]`` (values read as JSON when they
    parse, as text otherwise)."""
    options = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip():
            raise StudyError(f"cannot read option {item!r}; write NAME=VALUE, e.g. node_selection=min")
        try:
            options[name.strip()] = json.loads(value)
        except ValueError:
            options[name.strip()] = value
    return options


def _names(value) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return list(dict.fromkeys(str(v).strip().lower() for v in items if str(v).strip()))


# ------------------------------------------------------------------------------ grid
def grid(*, model: str, methods, compressions, budgets=("erk",), seeds=(0,), options=None,
         measures: Iterable[str] = (), settings: Mapping | None = None,
         dsts=("static",)) -> list[Point]:
    """Every point of a study, validated before any work starts.

    Placement methods (RPI, MiCA, ...) get one point per budget; ranking methods (magnitude,
    SynFlow, ...) take no budget and get one point per compression and seed.

    Parameters
    ----------
    model : str
        A zoo model name.
    methods, budgets : str or iterable of str
        Comma-separated text or names.
    compressions : str or iterable
        As :func:`parse_compressions` reads them.
    seeds : str or iterable of int
    options : mapping, optional
        Generator options: ``NAME`` goes to every method (each must take it), ``METHOD.NAME``
        to that method only (`method_options`). Every point carries the whole mapping, so its
        key and the study's definition cover all of them.
    measures : iterable of str
        Extra measures (``"spatial"``, ``"paths"``, ``"spectral"``; see
        ``graphpai.study.measure.MEASURES``).
    settings : mapping, optional
        Parameters of the measures. ``data`` (``"synthetic"`` or a CIFAR directory) also gives
        the prune batches of methods that need them (SNIP, GraSP; 10 x classes training images
        drawn with the point's seed).
    dsts : str or iterable of str
        ``static``, ``set``, ``rigl`` (comma-separated text or names; default static only): how
        trained points train their masks, one point per value (needs the ``train`` measure for
        anything but static; the DST parameters ``update_every``, ``drop_fraction`` and
        ``stop_fraction`` are settings).

    Returns
    -------
    list of Point
        In the order method, budget, compression, seed.

    Raises
    ------
    UnknownModelError, UnknownMethodError
        For an unknown model, method, budget or measure (the message lists the known ones).
    StudyError
        For an unreadable compression or seed list, or a method that needs prune batches
        without ``settings["data"]``.

    Examples
    --------
    >>> points = grid(model="mlp", methods="rpi,mica", budgets="erk,igq",
    ...               compressions="1:2:1", seeds="0")
    >>> len(points), points[0].label
    (8, 'rpi-erk 10^1 seed 0')
    """
    from ..budgets import BUDGETS
    from ..generators import GENERATORS, get_generator, methods_used
    from ..prune import _check_options
    from .measure import MEASURES

    _check_model(model)
    compressions = parse_compressions(compressions)
    seeds = parse_seeds(seeds)
    options = dict(options or {})
    measures = _names(measures)
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise UnknownMethodError(f"unknown measure {unknown[0]!r}; known measures: "
                                 f"{', '.join(sorted(MEASURES))}")
    budget_names = _names(budgets) or ["erk"]
    for name in budget_names:
        if name not in BUDGETS and name not in GENERATORS:
            raise UnknownMethodError(f"unknown budget {name!r}; known budgets: "
                                     f"{', '.join(sorted(BUDGETS))}, or a method name for its "
                                     f"per-layer counts: {', '.join(sorted(GENERATORS))}")
    dst_names = parse_dsts(dsts)
    if dst_names != [None] and "train" not in measures:
        raise StudyError("dynamic sparse training (--dst set/rigl) trains the points: add the "
                         "train measure (--train RECIPE)")
    generators = [get_generator(m) for m in _names(methods)]
    if not generators:
        raise StudyError(f"no method given; known methods: {', '.join(sorted(GENERATORS))}")
    names = [g.name for g in generators]
    for key in options:
        scope = key.split(".", 1)[0] if "." in key else None
        if scope is not None and scope not in names:
            raise StudyError(f"option {key!r} is for method {scope!r}, which this study does "
                             f"not run (methods: {', '.join(names)})")
    points = []
    for gen in generators:
        _check_options(gen, method_options(options, gen.name))
        chosen = budget_names if gen.kind == "placement" else [None]
        for budget in chosen:
            hungry = [g for g in methods_used(gen.name, budget, method_options(options, gen.name))
                      if g.needs_data]
            if hungry and (settings or {}).get("data") is None:
                raise StudyError(f"{hungry[0].name} needs prune batches: give the sweep --data "
                                 "DIR (a CIFAR directory) or --data synthetic (settings="
                                 "{'data': ...} in Python)")
            points.extend(Point(model, gen.name, budget, c, s, options, measures, settings, d)
                          for d in dst_names for c in compressions for s in seeds)
    return points


DSTS = ("static", "set", "rigl")


def parse_dsts(value) -> list:
    """The DST axis from ``"static,set,rigl"``: None for static, the method name otherwise.

    >>> parse_dsts("static,rigl")
    [None, 'rigl']
    """
    names = (_names(value) if value is not None else []) or ["static"]
    unknown = [n for n in names if n not in DSTS]
    if unknown:
        raise StudyError(f"unknown DST mode {unknown[0]!r}; write a comma list of "
                         f"{', '.join(DSTS)} (docs/dst.md)")
    return [None if n == "static" else n for n in names]


def method_options(options, method: str) -> dict:
    """The generator options of `method` in a study's options: every unscoped ``NAME`` and, for
    ``METHOD.NAME``, those whose METHOD is `method` (so ``nm.n=2`` reaches only nm).

    >>> method_options({"mica.node_selection": "min", "seed_layers": 1, "nm.n": 2}, "mica")
    {'seed_layers': 1, 'node_selection': 'min'}
    """
    out = {k: v for k, v in dict(options).items() if "." not in k}
    prefix = f"{method}."
    out.update({k[len(prefix):]: v for k, v in dict(options).items() if k.startswith(prefix)})
    return out


def _check_model(name: str) -> None:
    from ..torch.models import input_shape

    input_shape(name)  # UnknownModelError listing the zoo
