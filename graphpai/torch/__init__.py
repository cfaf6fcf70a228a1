"""The torch adapter: converts models and masks to and from graphpai's graph world.

It converts; it does not analyse (DESIGN.md). Import it by name: ``import graphpai.torch``.
"""

from .extract import layer_weights, prunable_modules, to_graph
from .masks import apply_masks, dense_masks, masked_copy, masks_from_model, remove_masks
from . import train  # a callable module: graphpai.torch.train(model, masks, data, recipe=...)

__all__ = ["to_graph", "layer_weights", "prunable_modules", "apply_masks", "masks_from_model",
           "dense_masks", "remove_masks", "masked_copy", "train"]
