"""Make a module callable, so ``graphpai.spectral(net, masks)`` and ``graphpai.spectral.distance``
both work: the module keeps its functions and submodules and calls its main function."""

import sys
import types

__all__ = ["callable_module"]


def callable_module(module_name: str, func) -> None:
    """Make ``sys.modules[module_name]`` call `func` when called; its docstring becomes func's."""
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return func(*args, **kwargs)

    module.__class__ = _CallableModule
