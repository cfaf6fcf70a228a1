"""Mask generators, registered by name (docs/definitions.md#generators).

``GENERATORS`` maps a method name to a :class:`Generator`; :func:`graphpai.prune.prune` looks
methods up there, so a new method is one ``@register("name")`` decorator in a module the user
imports (the built-in modules are imported here).

Built in: ``mica`` (minimum connection assurance, [MiCA]), ``rpi`` (random placement of a
budget), ``npb`` (node-path balancing, [NPB]; docs/npb.md), ``pags`` (full-spectrum selection,
[FS]; docs/pags.md), ``magnitude``, ``snip``, ``grasp``, ``synflow`` (global ranking, [SF]
conventions), ``nm`` (N:M semi-structured, docs/llm.md),
``wanda`` (|w| times input norm per output row, [Wanda]; docs/llm.md).
"""

from ._registry import GENERATORS, Generator, get_generator, methods_used, register
from .mica import mica, node_counts, shuffle
from .npb import npb, solve_npb
from .pags import pags, solve_pags
from .nm import nm, nm_masks
from .random import rpi
from .ranking import global_threshold, grasp, magnitude, snip, synflow
from .wanda import wanda

__all__ = ["GENERATORS", "Generator", "register", "get_generator", "methods_used", "mica",
           "node_counts", "shuffle", "npb", "solve_npb", "pags", "solve_pags", "nm", "nm_masks",
           "rpi", "magnitude", "snip", "grasp", "synflow", "global_threshold", "wanda"]
