"""The torch adapter: converts models and masks to and from graphpai's graph world.

It converts; it does not analyse (DESIGN.md). Import it by name: ``import graphpai.torch``.
"""

from .extract import layer_weights, prunable_modules, to_graph

__all__ = ["to_graph", "layer_weights", "prunable_modules"]
