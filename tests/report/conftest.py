"""A small results table written by hand (the study store's column names), used by the report
tests: RPI and MiCA, ERK and IGQ, compressions 10^1..10^4, seeds 0 and 1.

Hand-chosen numbers: MiCA keeps every weight functional everywhere. RPI-ERK keeps
ratio 1 - 0.1 (x - 1) - 0.1 seed at 10^x (seed 0: 1.0, 0.9, 0.8, 0.7; seed 1: 0.9, ...).
RPI-IGQ is fully functional at 10^1, keeps 0.8 of its weights at 10^2 and 10^3 and is
disconnected at 10^4 (both seeds). N = 100,000.
"""

import pytest

N = 100_000


def _row(method, budget, x, seed, ratio, *, disconnected=False, **extra):
    kept = N // 10 ** x
    functional = round(ratio * kept)
    row = {
        "key": f"{method}-{budget}-{x}-{seed}", "status": "ok", "error": None, "elapsed_s": 0.1,
        "model": "resnet20", "method": method, "budget": budget, "compression": 10.0 ** x,
        "log10_compression": float(x), "seed": seed, "options": "{}", "N": N, "kept": kept,
        "density": kept / N, "direct_compression": N / kept,
        "channel_functional": functional, "channel_functional_ratio": functional / kept,
        "channel_corrected_compression": N / functional if functional else float("inf"),
        "channel_functional_nodes": 0 if disconnected else 100,
        "channel_functional_node_ratio": 0.0 if disconnected else 0.5,
        "channel_disconnected": disconnected,
    }
    row.update(extra)
    return row


def make_table(*, paths=False, spectral=False):
    rows = []
    for method in ("mica", "rpi"):
        for budget in ("erk", "igq"):
            for x in (1, 2, 3, 4):
                for seed in (0, 1):
                    disconnected = False
                    if method == "mica":
                        ratio = 1.0
                    elif budget == "erk":
                        ratio = 1.0 - 0.1 * (x - 1) - 0.1 * seed
                    else:
                        ratio = {1: 1.0, 2: 0.8, 3: 0.8, 4: 0.0}[x]
                        disconnected = x == 4
                    extra = {}
                    if paths:
                        extra.update(log10_paths=float("-inf") if disconnected else 40.0 - 5 * x,
                                     effective_nodes=0 if disconnected else 700 - 100 * x,
                                     nodes=701)
                    if spectral:
                        extra.update(iclr23_delta_r_norm=None if disconnected else 0.1 * x,
                                     iclr23_imdb=0.5, iclr23_narc=-0.1,
                                     neurips23_coordinate_norm=None if x == 4 else 2.0)
                    rows.append(_row(method, budget, x, seed, ratio, disconnected=disconnected,
                                     **extra))
    return rows


@pytest.fixture
def table():
    return make_table()


@pytest.fixture
def full_table():
    return make_table(paths=True, spectral=True)


@pytest.fixture
def make():
    """`make_table` itself, for tests that build variants of the table."""
    return make_table
