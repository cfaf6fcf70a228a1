"""Make a module callable, so ``graphpai.spectral(net, masks)`` and ``graphpai.spectral.distance``
both work: the module keeps its functions and submodules and calls its main function."""

import functools
import inspect
import sys
import types

__all__ = ["callable_module"]


def callable_module(module_name: str, func) -> None:
    """Make ``sys.modules[module_name]`` call `func` when called.

    ``inspect.signature(module)`` (and so ``help()`` and IDEs) shows `func`'s real signature.
    """
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        @functools.wraps(func)
        def __call__(self, *args, **kwargs):
            return func(*args, **kwargs)

    module.__class__ = _CallableModule
    module.__signature__ = inspect.signature(func)
