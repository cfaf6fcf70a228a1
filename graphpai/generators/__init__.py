"""Mask generators, registered by name (SPEC §7).

``GENERATORS`` maps a method name to a :class:`Generator`; :func:`graphpai.prune.prune` looks
methods up there, so a new method is one ``@register("name")`` decorator in a module of this
package (every module here is imported with it) or in any module the user imports.

Built in: ``rpi`` (random placement of a budget), ``magnitude``, ``snip``, ``grasp``, ``synflow``
(global ranking, [SF] conventions).
"""

import importlib
import pkgutil

from ._registry import GENERATORS, Generator, get_generator, register
from .random import rpi
from .ranking import global_threshold, grasp, magnitude, snip, synflow

__all__ = ["GENERATORS", "Generator", "register", "get_generator", "rpi", "magnitude", "snip",
           "grasp", "synflow", "global_threshold"]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
del _module
