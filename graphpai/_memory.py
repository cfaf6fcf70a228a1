"""How much memory is free, for the checks that stop a computation that cannot fit with one
clear error (naming the layer and the memory needed) before it allocates anything.

:func:`require` is the one check: the entry points that allocate per layer (the audit's masks,
channel paths, the spectral report) estimate their bytes from the layer shapes and call it
before they allocate.
"""

from __future__ import annotations

from .errors import GraphpaiError

__all__ = ["available_memory", "human", "fits", "require", "require_layers", "layers_summary"]


def available_memory() -> int | None:
    """Bytes of host memory available now (``MemAvailable`` of /proc/meminfo; None where the
    system does not say)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def human(nbytes: float) -> str:
    """``1.50 GiB``, ``12.0 MiB``, ``3.0 KiB``, ``900 B``.

    >>> human(3 * 2**29), human(900)
    ('1.50 GiB', '900 B')
    """
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.2f} {unit}" if unit in ("TiB", "GiB") else \
                f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"


def fits(nbytes: float) -> bool:
    """Whether `nbytes` fit in the memory available now (True when the system does not say):
    a cheap first test before a finer estimate."""
    free = available_memory()
    return free is None or nbytes <= free


def require(nbytes: float, what: str, fix: str) -> None:
    """Raise one GraphpaiError when `nbytes` cannot fit in the memory available now.

    `what` names the layer and what the bytes are for ("the sparse channel matrix of layer
    'fc' (4096, 25088)"), `fix` what to do instead; the message reads ``{what} would take about
    {bytes}, but only {free} is free; {fix}``. Nothing happens when the system does not say how
    much is free (:func:`available_memory` is None). Call it before allocating.
    """
    free = available_memory()
    if free is not None and nbytes > free:
        raise GraphpaiError(f"{what} would take about {human(nbytes)}, but only {human(free)} "
                            f"is free; {fix}")


def require_layers(layers, per_weight: float, what: str, fix: str, extra: float = 0) -> None:
    """:func:`require` for `per_weight` bytes per weight of every layer (a mapping name ->
    Layer) plus `extra` bytes; the message names the layers as :func:`layers_summary` does."""
    need = per_weight * sum(layer.numel for layer in layers.values()) + extra
    if not fits(need):  # the message only when it is needed
        require(need, f"{what} ({layers_summary(layers)})", fix)


def layers_summary(layers) -> str:
    """``113 layers, 888,143,872 weights; the largest 'lm_head' (32000, 2048)`` for a mapping
    of layer name -> Layer (the words the whole-network checks name the layers with)."""
    layers = list(layers.values())
    if not layers:
        return "no layers"
    largest = max(layers, key=lambda layer: layer.numel)
    weights = sum(layer.numel for layer in layers)
    return (f"{len(layers)} layer{'s' if len(layers) != 1 else ''}, {weights:,} weights; the "
            f"largest {largest.name!r} {tuple(largest.weight_shape)}")
