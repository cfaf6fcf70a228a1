"""Rank correlation of graph metrics with accuracy at each compression ([RAM], [FS]; docs/training.md).

For every compression of a study and every metric column, Kendall's tau and Spearman's rho
(``scipy.stats``) between the metric and an accuracy column over the points at that compression:
the correlation tables of [RAM] and [FS].

References
----------
.. [RAM] D. Hoang, S. Liu, R. Marculescu, Z. Wang, "Revisiting Pruning at Initialization through
   the Lens of Ramanujan Graph", ICLR 2023.
.. [FS] D. Hoang, S. Kundu, S. Liu, Z. Wang, "Don't just prune by magnitude! Your mask topology is
   a secret weapon", NeurIPS 2023.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["correlations", "METRICS"]

#: metric columns correlated by default (those present in the table are used)
METRICS = ("channel_functional_ratio", "log10_paths", "effective_nodes", "iclr23_imdb",
           "iclr23_narc", "iclr23_delta_r_norm", "neurips23_imdb", "neurips23_coordinate_norm")


def _number(value):
    if value is None:
        return math.nan
    if isinstance(value, str):
        try:
            return float(value)  # "inf", "-inf", "nan" as jsonable writes them
        except ValueError:
            return math.nan
    return float(value)


def correlations(table, *, metrics=None, accuracy: str = "best_test_acc",
                 by: str = "compression") -> list[dict]:
    """Kendall's tau and Spearman's rho of each metric with `accuracy`, per value of `by`.

    Parameters
    ----------
    table : list of dict
        Study rows (``graphpai.study.store.read_table``); rows whose ``status`` is not "ok" and
        pairs with a missing or nan value are left out; +-inf ranks as the extreme it is.
    metrics : sequence of str, optional
        Default: the columns of `METRICS` that the table holds.
    accuracy : str
    by : str

    Returns
    -------
    list of dict
        One row per (compression, metric): `by`, ``metric``, ``n``, ``kendall_tau``,
        ``kendall_p``, ``spearman_rho``, ``spearman_p`` (nan when n < 3 or a column is constant).
    """
    from scipy import stats

    rows = [r for r in table if r.get("status", "ok") == "ok"]
    if metrics is None:
        metrics = [m for m in METRICS if any(r.get(m) is not None for r in rows)]
    out = []
    for key in sorted({r.get(by) for r in rows if r.get(by) is not None}, key=_number):
        group = [r for r in rows if r.get(by) == key]
        for metric in metrics:
            x = np.array([_number(r.get(metric)) for r in group])
            y = np.array([_number(r.get(accuracy)) for r in group])
            keep = ~(np.isnan(x) | np.isnan(y))
            x, y = x[keep], y[keep]
            tau = tau_p = rho = rho_p = math.nan
            if len(x) >= 3 and len(set(x)) > 1 and len(set(y)) > 1:
                # ranks first: scipy's spearmanr would turn inf into nan
                rx, ry = stats.rankdata(x), stats.rankdata(y)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tau, tau_p = stats.kendalltau(rx, ry)
                    rho, rho_p = stats.spearmanr(rx, ry)
            out.append({by: key, "metric": metric, "n": int(len(x)), "kendall_tau": float(tau),
                        "kendall_p": float(tau_p), "spearman_rho": float(rho),
                        "spearman_p": float(rho_p)})
    return out
