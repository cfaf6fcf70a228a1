"""What ``graphpai report`` does (the CLI section in graphpai/cli.py is a shell over this).

- ``graphpai report --study DIR [--out OUT]``: read the study's rows and definition from its
  store and write its page again, recomputing nothing.
- ``graphpai report --model NAME --masks A.pt [--masks B.pt ...] --out DIR``: audit (both
  semantics), paths and spectral reports of each mask, side by side, and the comparison of every
  pair (:func:`graphpai.report.compare.compare_masks`); writes ``report.html``, ``figures/`` and
  ``report.json``.

Every input is checked before any file is written; a bad one is a
:class:`~graphpai.errors.GraphpaiError` (one line, exit status 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import GraphpaiError

__all__ = ["run_report", "study_params"]


def study_params(definition: dict, table) -> dict:
    """The parameter table of a study page: its stored definition and the grid axes found in
    its rows."""
    from .figures import as_float

    params = {"model": definition.get("model")}
    axes = {"methods": "method", "budgets": "budget", "seeds": "seed"}
    for label, column in axes.items():
        params[label] = ", ".join(sorted({str(r.get(column)) for r in table}))
    targets = sorted({as_float(r.get("compression")) for r in table} - {None})
    params["compressions"] = ", ".join(f"{c:.6g}" for c in targets)
    for name in ("options", "measures", "settings", "definitions_version"):
        if definition.get(name) not in (None, {}, []):
            params[name] = definition[name]
    return params


def _study(args) -> int:
    from ..study.store import read_study, read_table
    from .html import check_report_dir, study_summary, write_study_report

    if args.masks or args.input_shape:
        raise GraphpaiError("--study re-renders a study's page; --masks and --input-shape "
                            "belong to `graphpai report --model NAME --masks FILE`")
    table = read_table(args.study)
    try:
        definition = read_study(args.study)
    except GraphpaiError:  # a CSV export holds rows only
        definition = {}
    out = args.out or (args.study if os.path.isdir(args.study) else os.path.dirname(args.study))
    check_report_dir(out)
    path = write_study_report(table, out, params=study_params(definition, table))
    summary = study_summary(table)
    if args.json:
        print(json.dumps({"report": str(path), "summary": summary}, indent=2))
    else:
        print("\n".join(summary + [f"report written to {path}"]))
    return 0


def _names(paths) -> list[str]:
    """Short, distinct names for mask files: the file name without suffix."""
    names = []
    for path in paths:
        base = Path(path).stem or str(path)
        name, i = base, 2
        while name in names:
            name, i = f"{base} ({i})", i + 1
        names.append(name)
    return names


def _masks(args) -> int:
    import torch

    from ..cli import load_model
    from ..masks import MaskSet
    from ..torch.extract import layer_weights, to_graph
    from .compare import compare_masks
    from .html import check_report_dir, write_mask_report
    from .tables import format_table, write_json

    if not args.masks:
        raise GraphpaiError("give the masks to report: --masks A.pt [--masks B.pt ...] (or "
                            "--study DIR for a study's page)")
    if not args.out:
        raise GraphpaiError("give the report's directory: --out DIR")
    out = check_report_dir(args.out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = load_model(args)
    graph = to_graph(model)
    names = _names(args.masks)
    masks = {name: MaskSet.load(path).validate(graph) for name, path in zip(names, args.masks)}
    report = compare_masks(graph, masks, weights=layer_weights(model),
                           sources={n: f"masks from {p}" for n, p in zip(names, args.masks)})
    params = {"model": args.model or args.model_file, "masks": ", ".join(args.masks),
              "seed of the initial weights": args.seed,
              "semantics": "channel and spatial", "spectral profiles": "iclr23, neurips23"}
    data = report.to_dict()
    write_json(data, out / "report.json")
    path = write_mask_report(report, out, params=params)
    if args.json:
        print(json.dumps({"report": str(path), **data}, indent=2, allow_nan=False))
    else:
        print("\n".join([format_table(report.total_rows(), ["mask", "kept",
                                                             "direct_compression",
                                                             "channel_corrected_compression",
                                                             "spatial_corrected_compression"]),
                         ""] + report.summary() + [f"report written to {path}"]))
    return 0


def run_report(args) -> int:
    """Run ``graphpai report`` for parsed arguments (see the module docstring)."""
    return _study(args) if args.study else _masks(args)
