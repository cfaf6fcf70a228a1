"""The ``graphpai`` command: a thin shell over the Python API.

Each subcommand is registered in ``COMMANDS`` with its arguments and a ``run(args) -> int``.
Errors graphpai raises on purpose print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from typing import Callable

from ._results import jsonable
from .errors import GraphpaiError, ModelError

__all__ = ["main", "COMMANDS"]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``run(args) -> int`` as subcommand `name`."""

    def add(run):
        if name in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return add


# ---------------------------------------------------------------- shared arguments
def model_arguments(parser: argparse.ArgumentParser, *, masks: bool = True) -> None:
    """--model NAME | --model-file FILE.py:factory, --num-classes, --input-shape[, --masks]."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a zoo model name (see `graphpai models`)")
    source.add_argument("--model-file", metavar="FILE.py:FACTORY",
                        help="a Python file and the function in it that returns an nn.Module")
    parser.add_argument("--num-classes", type=int, default=10,
                        help="classes of a zoo model (default: 10)")
    parser.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                        help="one input without batch, e.g. 3,32,32, or 16 (token ids, with "
                             "--input-dtype long); zoo models know theirs")
    parser.add_argument("--input-dtype", choices=("float", "long"),
                        help="long: the input is token ids (for models with nn.Embedding)")
    if masks:
        parser.add_argument("--masks", metavar="FILE",
                            help="masks (.pt, .npz or .safetensors); without it, the masks the "
                                 "model carries (torch.nn.utils.prune / torch.ao.pruning), "
                                 "else the dense model")


def output_arguments(parser: argparse.ArgumentParser) -> None:
    """--json (print the result as JSON) and --out FILE (write JSON there).

    ``main`` checks that --out can be written before the command runs (``check_paths``).
    """
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON result to FILE")
    check_paths(parser, "out")


def check_paths(parser: argparse.ArgumentParser, *dests: str) -> None:
    """Have ``main`` check, before the command runs, that the file arguments `dests` (argparse
    dest names) can be written: a bad path fails at once with one line, not after the work."""
    known = parser.get_default("_writable") or ()
    parser.set_defaults(_writable=tuple(known) + dests)


def run_arguments(parser: argparse.ArgumentParser, *, device: bool = False) -> None:
    """--threads N and --quiet (no progress bars) [, --device] for commands that compute."""
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads (default: at most one per free core, see "
                             "docs/pruning.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    if device:
        parser.add_argument("--device", default="cpu",
                            help="torch device for the computation, e.g. cuda (default: cpu)")


def progress(args) -> bool:
    """Whether to show progress bars: not --quiet and stderr is a terminal."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def progress_option(func, args) -> dict:
    """``{"progress": progress(args)}`` if `func` takes a ``progress`` keyword, else ``{}``."""
    import inspect

    try:
        takes = "progress" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes = False
    return {"progress": progress(args)} if takes else {}


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape {text!r} is not like 3,32,32") from None
    if not shape or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"input shape {text!r} needs positive sizes, like 3,32,32")
    return shape


def load_model(args):
    """The nn.Module named by --model or --model-file (with ``input_shape`` set)."""
    from .torch import models

    if args.model:
        if args.num_classes < 1:
            raise ModelError(f"--num-classes {args.num_classes} must be a whole number >= 1")
        model = models.build(args.model, num_classes=args.num_classes)
    else:
        model = _model_from_file(args.model_file)
    if args.input_shape:
        model.input_shape = args.input_shape
    if getattr(args, "input_dtype", None):
        import torch

        model.input_dtype = torch.long if args.input_dtype == "long" else torch.float32
    return model


def _model_from_file(text: str):
    """Call FACTORY in FILE.py (``text`` is FILE.py:FACTORY); every failure is a ModelError."""
    import torch

    path, _, factory = text.rpartition(":")
    if not path or not factory:
        raise ModelError(f"--model-file {text!r} must look like FILE.py:factory")
    try:
        spec = importlib.util.spec_from_file_location("graphpai_user_model", path)
        if spec is None or spec.loader is None:
            raise ModelError(f"model file {path!r} is not a Python file (FILE.py:factory)")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except FileNotFoundError:
        raise ModelError(f"model file {path!r} does not exist") from None
    except SyntaxError as exc:
        raise ModelError(f"model file {path!r} has a syntax error at line {exc.lineno}: "
                         f"{exc.msg}") from None
    except ModelError:
        raise
    except Exception as exc:  # ImportError and anything else the file runs into at import
        raise ModelError(f"model file {path!r} failed to import: {_first_line(exc)}") from None
    if not callable(getattr(module, factory, None)):
        raise ModelError(f"{path!r} has no function {factory!r}")
    try:
        model = getattr(module, factory)()
    except Exception as exc:
        raise ModelError(f"{factory}() in {path!r} raised {_first_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{factory}() in {path!r} returned a {type(model).__name__}, not a "
                         "torch.nn.Module; the factory must return the model")
    return model


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_graph_and_masks(args):
    """(model, NetGraph, MaskSet or None) for --model/--model-file and --masks."""
    from .masks import MaskSet
    from .torch.extract import to_graph

    model = load_model(args)
    graph = to_graph(model)
    if not graph.layers:
        raise ModelError(f"{type(model).__name__} has no Conv1d/Conv2d/Linear layer that its "
                         "forward calls; graphpai analyses the prunable layers of a network")
    masks = None
    if getattr(args, "masks", None):
        masks = MaskSet.load(args.masks).validate(graph)
    elif hasattr(args, "masks"):  # no --masks: a pruned model's own masks, said on stderr
        from .torch.masks import model_masks

        masks, source = model_masks(model, graph)
        if masks is not None:
            print(f"graphpai: no --masks given: using the model's {source}", file=sys.stderr)
    return model, graph, masks


def emit(args, data: dict, table: str) -> None:
    """Print the table (or JSON with --json) and write JSON to --out if given."""
    if getattr(args, "out", None):
        from .report.tables import write_json

        write_json(data, args.out)
    if getattr(args, "json", False):
        print(json.dumps(jsonable(data), indent=2, allow_nan=False))
    else:
        print(table)


# ---------------------------------------------------------------- models
def _models_arguments(parser):
    output_arguments(parser)


@command("models", "list the model zoo with layer counts and prunable weights", _models_arguments)
def _models(args) -> int:
    import torch

    from .report.tables import format_table
    from .torch import models
    from .torch.extract import prunable_modules

    rows = []
    for name, spec in sorted(models.MODELS.items()):
        with torch.device("meta"):  # counting needs shapes only: no memory, no init cost
            layers = prunable_modules(models.build(name)).values()
        rows.append({"model": name, "input_shape": "x".join(map(str, spec.input_shape)),
                     "layers": len(layers), "prunable_weights": sum(m.weight.numel() for m in layers),
                     "description": spec.description})
    emit(args, {"models": rows}, format_table(rows))
    return 0


# ---------------------------------------------------------------- graph
def _graph_arguments(parser):
    model_arguments(parser)
    output_arguments(parser)


@command("graph", "summarise a model's graph: groups, links, per-layer shapes and density",
         _graph_arguments)
def _graph(args) -> int:
    from .report.tables import format_table

    _, graph, masks = load_graph_and_masks(args)
    summary = graph.summary(masks)
    rows = [{"layer": l["name"], "kind": l["kind"], "weight_shape": "x".join(map(str, l["weight_shape"])),
             "in_size": "x".join(map(str, l["in_size"])) or "-", "weights": l["weights"],
             "kept": l["kept"], "density": l["density"]} for l in summary["layers"]]
    links = ", ".join(f"{k['kind']} {k['name']}" for k in summary["links"])
    kept = sum(l["kept"] for l in summary["layers"])
    text = (f"{graph}\nlinks: {links or 'none'}\n\n{format_table(rows)}\n\n"
            f"total: {kept:,} of {graph.num_weights:,} weights kept "
            f"(density {kept / graph.num_weights:.4g})")
    emit(args, summary, text)
    return 0


# ---------------------------------------------------------------- prune
def _prune_arguments(parser):
    from .budgets import BUDGETS
    from .generators import GENERATORS

    model_arguments(parser, masks=False)
    parser.add_argument("--method", required=True, help=", ".join(sorted(GENERATORS)))
    parser.add_argument("--budget", help=f"placement methods: {', '.join(sorted(BUDGETS))}, a "
                        "method name (its mask's per-layer counts: RPI-X) or a mask file; "
                        "default erk")
    parser.add_argument("--compression", help="target N/|M|, written 1000, 1e3 or 10^3")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the model's init and the mask (default: 0)")
    parser.add_argument("--data", metavar="DIR|synthetic", help="prune batches for snip/grasp: "
                        "a CIFAR-10/100 directory (10 x classes images of its training split, "
                        "docs/training.md) or 'synthetic' (random images, a demo)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a method option, repeatable: npb alpha=0.01 beta=1 max_p=9 "
                             "solver=exact|milp path_norm=tight|reference move=false; pags "
                             "base=snip budget=erk population=2000 rule=imdb|delta_r batch_k=1 "
                             "noise=0.001 (docs/npb.md, docs/pags.md)")
    parser.add_argument("--masks-out", metavar="FILE.pt", help="write the masks (.pt or .npz)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the per-layer budget and write nothing (placements only "
                             "resolve the budget; ranking methods score but do not save)")
    output_arguments(parser)  # --out FILE.pt/.npz is still read as --masks-out (older spelling)
    check_paths(parser, "masks_out")
    run_arguments(parser, device=True)


@command("prune", "generate a mask with a method and budget; print the per-layer budget",
         _prune_arguments)
def _prune(args) -> int:
    import torch

    from .budgets import from_mask
    from .errors import DataError
    from .generators import get_generator, methods_used
    from .masks import MaskSet
    from .prune import prune
    from .report.tables import format_table
    from .torch.extract import to_graph

    from .study import parse_options

    _prune_outputs(args)
    generator = get_generator(args.method)
    method_options = parse_options(args.option)
    budget = args.budget
    if budget and budget.endswith((".pt", ".pth", ".npz")):
        budget = MaskSet.load(budget)
    hungry = [g.name for g in methods_used(generator.name, budget, method_options)
              if g.needs_data]
    if hungry and args.data is None:
        raise DataError(f"{hungry[0]} needs prune batches: add --data DIR (a CIFAR directory), "
                        "--data synthetic (random images, a demo) or call graphpai.prune from "
                        "Python with data=your DataLoader")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = load_model(args)
    graph = to_graph(model)
    data = None
    if hungry:
        from .torch.data import load_data, synthetic_batches

        classes = sum(graph.groups[name].channels for name in graph.outputs)
        if args.data == "synthetic":
            data = synthetic_batches(model.input_shape, classes, seed=args.seed)
        else:  # the training split of the data (the same seeded split `graphpai train` uses)
            data = load_data(args.data, num_classes=classes, input_shape=model.input_shape)
            data = data.train.prune_batches(seed=args.seed)
    if generator.kind == "ranking" and args.device != "cpu":
        model = model.to(args.device)
    options = {**progress_option(generator.func, args), **method_options}
    if args.dry_run and generator.kind == "placement":
        from .prune import resolve_budget

        masks = None
        table = resolve_budget(model, generator.default_budget if budget is None else budget,
                               args.compression, seed=args.seed, data=data, graph=graph)
    else:
        masks = prune(model, generator.name, budget=budget, compression=args.compression,
                      seed=args.seed, data=data, **options)
        table = from_mask(masks, graph, source=generator.name)
    if not args.dry_run:
        masks.save(args.masks_out)
    rows = [{"layer": r.layer, "weights": r.numel, "kept": r.count, "density": r.density}
            for r in table.layers]
    label = args.budget if isinstance(budget, str) else (generator.default_budget if budget is None
                                                         else f"mask {args.budget}")
    written = "dry run, nothing written" if args.dry_run else f"masks written to {args.masks_out}"
    lines = [format_table(rows), "",
             f"{generator.name}" + (f" with budget {label}" if generator.kind == "placement" else "")
             + f", seed {args.seed}: kept {table.total:,} of {table.num_weights:,} weights, "
             f"compression {table.achieved_compression:.6g}; {written}"]
    lines += _connectivity_warnings(graph, masks, table)
    drift = None
    if masks is not None and generator.kind == "placement" and not generator.exact_budget:
        from .prune import resolve_budget  # npb moves dead weights: say how far it drifted

        wanted = resolve_budget(model, generator.default_budget if budget is None else budget,
                                args.compression, seed=args.seed, data=data, graph=graph)
        drift = table.total - wanted.total
        lines.append(f"budget {wanted.total:,} weights: drift {drift:+,} (kept minus budget)")
    result = {**table.to_dict(), "method": generator.name, "seed": args.seed,
              "masks_out": None if args.dry_run else args.masks_out, "dry_run": args.dry_run,
              "budget": label if generator.kind == "placement" else None, "drift": drift}
    emit(args, result, "\n".join(lines))
    return 0


def _prune_outputs(args) -> None:
    """Sort out --masks-out, --out (JSON; a .pt/.npz --out is the older spelling of --masks-out)
    and --dry-run before any work."""
    from .errors import MaskError

    if args.out and args.out.endswith((".pt", ".pth", ".npz")) and not args.masks_out:
        args.masks_out, args.out = args.out, None
    if args.dry_run:
        if args.masks_out:
            raise MaskError("--dry-run writes nothing; leave out --masks-out")
    elif not args.masks_out:
        raise MaskError("prune needs --masks-out FILE.pt (or .npz) for the masks, or --dry-run")
    elif not args.masks_out.endswith((".pt", ".pth", ".npz")):
        raise MaskError(f"--masks-out {args.masks_out!r} must end in .pt or .npz")


def _connectivity_warnings(graph, masks, table) -> list[str]:
    """Warning lines for layers that keep nothing; "disconnected" only when the audit says no
    input reaches an output (a zero layer on one branch of a concat is not a cut)."""
    import numpy as np

    from .functional import audit

    if masks is None:  # a budget only: the best case is every other layer dense
        masks = {n: np.full(layer.weight_shape, n not in table.zero_layers)
                 for n, layer in graph.layers.items()}
    cut = audit(graph, masks).disconnected
    lines = []
    if table.zero_layers:
        lines.append(f"warning: layer(s) {', '.join(table.zero_layers)} keep no weight"
                     + ("" if cut else "; other paths still connect the input to the output"))
    if cut:
        lines.append("warning: the network is disconnected: no kept path joins the input to the "
                     "output (corrected compression inf, see `graphpai audit`)")
    return lines


# ---------------------------------------------------------------- audit
def _audit_arguments(parser):
    model_arguments(parser)
    parser.add_argument("--semantics", choices=["channel", "spatial"], default="channel",
                        help="channel: reachability on the channel graph (fast); spatial: exact "
                             "per-pixel activity at initialization (docs/definitions.md#functional)")
    parser.add_argument("--paths", action="store_true",
                        help="also count effective paths and effective nodes "
                             "(docs/definitions.md#paths)")
    parser.add_argument("--functional-out", metavar="FILE",
                        help="write the functional masks (.pt or .npz)")
    parser.add_argument("--nm", metavar="N:M",
                        help="also check every layer's mask for an N:M pattern such as 2:4 "
                             "(nm_compliant per layer; docs/llm.md)")
    output_arguments(parser)
    check_paths(parser, "functional_out")
    run_arguments(parser, device=True)


@command("audit", "functional weights and channels of a mask, direct and corrected compression",
         _audit_arguments)
def _audit(args) -> int:
    from .functional import audit

    _, graph, masks = load_graph_and_masks(args)
    result = audit(graph, masks, semantics=args.semantics, device=args.device, nm=args.nm,
                   **progress_option(audit, args))
    data, table = result.to_dict(), result.table()
    if args.nm:
        broken = [r.layer for r in result.layers if not r.nm_compliant]
        table += (f"\nN:M {args.nm}: {len(result.layers) - len(broken)}/{len(result.layers)} "
                  f"layers compliant" + (f"; not: {', '.join(broken)}" if broken else ""))
    if args.paths:
        from .paths import paths

        counted = paths(graph, masks, semantics=args.semantics, device=args.device,
                        **progress_option(paths, args))
        data["paths"] = counted.to_dict()
        table += "\n\n" + counted.table()
    if args.functional_out:
        result.functional_masks.save(args.functional_out)
    emit(args, data, table)
    return 0


# ---------------------------------------------------------------- spectral
def _spectral_arguments(parser):
    from .spectral.ramanujan import GATES

    model_arguments(parser)
    parser.add_argument("--profile", choices=sorted(GATES), default="iclr23",
                        help="whose gates apply: iclr23 ([RAM], default) or neurips23 ([FS]); "
                             "see docs/definitions.md#gates")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the model's initial weights (used by the weighted "
                             "quantities; default: 0)")
    output_arguments(parser)
    run_arguments(parser)


@command("spectral", "Ramanujan gaps, NaRC, IMDB and the full-spectrum coordinate per layer",
         _spectral_arguments)
def _spectral(args) -> int:
    import torch

    from .spectral import spectral
    from .torch.extract import layer_tensors

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model, graph, masks = load_graph_and_masks(args)
    # the model's own tensors: the report makes its float64 copies after its memory check
    report = spectral(graph, masks, layer_tensors(model), profile=args.profile,
                      **progress_option(spectral, args))
    emit(args, report.to_dict(), report.to_text())
    return 0


# ---------------------------------------------------------------- report
def _report_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", metavar="DIR",
                        help="re-render the page of the study in DIR from its store (no "
                             "recomputation)")
    source.add_argument("--model", help="a zoo model name (see `graphpai models`), with --masks")
    source.add_argument("--model-file", metavar="FILE.py:FACTORY",
                        help="a Python file and the function in it that returns an nn.Module")
    source.add_argument("--run", metavar="DIR", dest="run_dir",
                        help="re-draw the page of a tracked training run (graphpai train "
                             "--track-every) from DIR/topology.json (docs/dst.md)")
    parser.add_argument("--num-classes", type=int, default=10,
                        help="classes of a zoo model (default: 10)")
    parser.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                        help="one input without batch, e.g. 3,32,32 (zoo models know theirs)")
    parser.add_argument("--masks", action="append", metavar="FILE", default=[],
                        help="a mask file (.pt or .npz); repeat to compare masks side by side")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the initial weights of the weighted spectral quantities "
                             "(default: 0)")
    parser.add_argument("--out", metavar="DIR",
                        help="where report.html and figures/ go (default with --study: DIR)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


@command("report", "an HTML report with figures: of masks side by side, or of a study",
         _report_arguments)
def _report(args) -> int:
    from .report.command import run_report

    if args.run_dir:  # a training run's page (graphpai/report/training.py)
        from .report.training import write_training_report

        if args.masks or args.input_shape:
            raise GraphpaiError("--run re-draws a training run's page; --masks and "
                                "--input-shape belong to `graphpai report --model NAME`")
        path = write_training_report(args.run_dir, args.out)
        print(json.dumps({"report": str(path)}) if args.json else f"report: {path}")
        return 0
    return run_report(args)


# ---------------------------------------------------------------- train
def _train_arguments(parser):
    from .torch.recipes import RECIPES

    model_arguments(parser)
    parser.add_argument("--data", required=True, metavar="DIR|synthetic",
                        help="a CIFAR-10/100 directory in the python-pickle layout, or 'synthetic' "
                             "(learnable class-dependent images, a demo)")
    parser.add_argument("--recipe", default="mica-resnet20",
                        help=f"{', '.join(sorted(RECIPES))} (default: mica-resnet20; "
                             "docs/training.md)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--weight-decay", type=float, help="override the recipe's weight decay")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the model's init (as `graphpai prune --seed`), the data order "
                             "and the augmentation (default: 0)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="metrics.json (every epoch), checkpoint.pt, final.pt; rerunning the "
                             "same command resumes from the checkpoint")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    run_arguments(parser)
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto (CUDA when available; default: auto)")
    parser.add_argument("--compression", help="without --masks: initial masks of --method and "
                        "--budget at this N/|M| (1000, 1e3, 10^3), seeded by --seed")
    parser.add_argument("--method",
                        help="initial masks' method with --compression (default: rpi)")
    parser.add_argument("--budget",
                        help="initial masks' budget with --compression (default: erk)")
    _dst_arguments(parser)
    parser.add_argument("--track-every", type=int, metavar="K",
                        help="record the masks' topology every K steps into topology.csv/json "
                             "and draw report.html at the end (docs/dst.md)")
    parser.add_argument("--masks-every", type=int, metavar="K",
                        help="with --track-every: save the masks under masks/ every K steps "
                             "(default: 10 x --track-every)")
    parser.add_argument("--track-no-spectral", action="store_true",
                        help="with --track-every: skip the spectral means (most of a record's "
                             "time on big layers)")


def _dst_arguments(parser, *, axis=False):
    if axis:
        parser.add_argument("--dst", metavar="static,set,rigl",
                            help="with --train: how the points train their masks, a grid axis "
                                 "(static keeps them fixed; set/rigl: dynamic sparse training "
                                 "from them, docs/dst.md; default: static)")
    else:
        parser.add_argument("--dst", choices=["set", "rigl"],
                            help="dynamic sparse training: drop and regrow every --update-every "
                                 "steps (docs/dst.md)")
    parser.add_argument("--update-every", type=int, default=100, metavar="K",
                        help="steps between DST updates (default: 100)")
    parser.add_argument("--drop-fraction", type=float, default=0.3, metavar="F",
                        help="initial DST drop fraction, cosine-decayed to 0 (default: 0.3)")
    parser.add_argument("--stop-fraction", type=float, default=0.75, metavar="F",
                        help="no DST updates after this fraction of training (default: 0.75)")


@command("train", "train a masked model with a paper's recipe; resumable, metrics every epoch",
         _train_arguments)
def _train(args) -> int:
    import os

    import torch

    from .masks import MaskSet
    from .report.tables import write_json
    from .torch.data import load_data
    from .torch.recipes import get_recipe
    from .torch.train import Callback, resolve_device, train
    from ._results import atomic_path

    recipe = get_recipe(args.recipe, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                        weight_decay=args.weight_decay, compile=args.compile or None)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = load_model(args)
    masks = MaskSet.load(args.masks) if args.masks else None
    if args.compression is not None:
        from .torch.dst import initial_masks

        if masks is not None:
            raise GraphpaiError("give either --masks FILE or --compression C (initial masks of "
                                "--method/--budget), not both")
        masks = initial_masks(model, args.compression, method=args.method or "rpi",
                              budget=args.budget or "erk", seed=args.seed,
                              input_shape=args.input_shape)
    elif args.method or args.budget:
        raise GraphpaiError("--method and --budget make initial masks with --compression C; "
                            "add it, or drop them")
    data = load_data(args.data, num_classes=args.num_classes if args.model else None,
                     input_shape=getattr(model, "input_shape", None),
                     val_fraction=recipe.val_fraction)
    callbacks, dst = _dst_callbacks(args, masks)
    os.makedirs(args.out, exist_ok=True)
    header = {"model": args.model or args.model_file, "masks": args.masks, "data": args.data,
              "kept": masks.kept() if masks else None, "compression": masks.compression()
              if masks else 1.0, **({"dst": dst.config()} if dst else {})}
    metrics = os.path.join(args.out, "metrics.json")

    def record(result):  # metrics.json: the run, its epochs and the DST updates so far
        from dataclasses import asdict

        updates = {"dst_updates": [asdict(u) for u in dst.history]} if dst else {}
        return {**header, **result.to_dict(), **updates}

    class Metrics(Callback):
        def on_epoch_end(self, epoch, model, masks, optimizer, result):
            write_json(record(result), metrics)

    result = train(model, masks, data, recipe=recipe, device=device, seed=args.seed,
                   checkpoint_dir=args.out, progress=progress(args),
                   callbacks=[Metrics(), *callbacks])
    write_json(record(result), metrics)
    if args.track_every:
        from .report.training import write_training_report

        write_training_report(args.out)
    with atomic_path(os.path.join(args.out, "final.pt")) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    summary = (f"{recipe.name}, seed {args.seed}, {result.device}: {result.epochs} epochs"
               + (f" (resumed after {result.resumed_from})" if result.resumed_from else "")
               + f", best test {_acc(result.best_test_acc)}, final test "
               f"{_acc(result.final_test_acc)}, best val {_acc(result.best_val_acc)}, "
               f"{result.wall_s:.1f} s; {args.out}/metrics.json, final.pt"
               + (", topology.csv, report.html" if args.track_every else ""))
    if args.json:
        print(json.dumps(jsonable({**header, **result.to_dict()}), indent=2, allow_nan=False))
    else:
        print(result.table() + "\n\n" + summary)
    return 0


def _dst_callbacks(args, masks):
    """The DST and tracking callbacks of `graphpai train` (and the DST one, or None)."""
    from .torch.dst import DynamicSparsity
    from .torch.track import TopologyTracker

    callbacks, dst = [], None
    if args.dst:
        if not masks:
            raise GraphpaiError("--dst needs initial masks: --masks FILE or --compression C")
        dst = DynamicSparsity(args.dst, update_every=args.update_every,
                              drop_fraction=args.drop_fraction, stop_fraction=args.stop_fraction)
        callbacks.append(dst)
    if args.track_every is not None:
        every = args.track_every
        if every < 1 or (args.masks_every is not None and args.masks_every < 1):
            raise GraphpaiError("--track-every and --masks-every must be whole numbers >= 1")
        callbacks.append(TopologyTracker(
            args.out, every=every, masks_every=args.masks_every or 10 * every,
            input_shape=args.input_shape, spectral=not args.track_no_spectral,
            meta={"model": args.model or args.model_file, "masks": args.masks,
                  "dst": dst.config() if dst else None}))
    elif args.masks_every is not None or args.track_no_spectral:
        raise GraphpaiError("--masks-every and --track-no-spectral belong to a tracked run: add "
                            "--track-every K")
    return callbacks, dst


def _acc(value) -> str:
    return "-" if value is None else f"{value:.4f}"


# ---------------------------------------------------------------- sweep
def _sweep_arguments(parser):
    parser.add_argument("--model", required=True, help="a zoo model name (see `graphpai models`)")
    parser.add_argument("--methods", required=True, metavar="M1,M2",
                        help="pruning methods, e.g. rpi,mica (ranking methods take no budget)")
    parser.add_argument("--budgets", default="erk", metavar="B1,B2",
                        help="budgets of the placement methods, e.g. erk,igq (default: erk)")
    parser.add_argument("--compressions", required=True, metavar="GRID",
                        help="log10 start:stop:step (inclusive), e.g. 0.5:6:0.5, or a list "
                             "1e2,1e3,10^3.5")
    parser.add_argument("--seeds", default="0", help="e.g. 0,1000,2000 (default: 0)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="study directory: results.sqlite, results.csv, results.json, "
                             "report.html; a rerun skips the points it holds")
    parser.add_argument("--semantics", choices=["channel", "spatial"], default="channel",
                        help="spatial adds the exact audit to the channel one")
    parser.add_argument("--paths", action="store_true", help="effective paths and nodes")
    parser.add_argument("--spectral", action="store_true",
                        help="spectral means and positive-gap share, profiles iclr23 and neurips23")
    parser.add_argument("--option", action="append", default=[], metavar="[METHOD.]NAME=VALUE",
                        help="a generator option for every method, or for one with METHOD., e.g. "
                             "mica.node_selection=min (repeatable)")
    parser.add_argument("--train", metavar="RECIPE",
                        help="also train every point with this recipe (docs/training.md) and "
                             "store recipe, epochs, best_val_acc, best_test_acc, final_test_acc")
    parser.add_argument("--data", metavar="DIR|synthetic",
                        help="a CIFAR directory or synthetic: the training data of --train "
                             "(default: synthetic) and the prune batches of SNIP/GraSP")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (--train)")
    parser.add_argument("--device", help="training device for --train (default: auto)")
    _dst_arguments(parser, axis=True)
    parser.add_argument("--workers", type=int, help="local processes (default: the CPU count)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="run on this Dask scheduler (pip install \"graphpai[dask]\")")
    parser.add_argument("--no-report", action="store_true", help="skip the figures and HTML page")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@command("sweep", "a study: masks over methods, budgets, compressions and seeds, audited, "
         "stored (resumable) and reported", _sweep_arguments)
def _sweep(args) -> int:
    from .study import grid, parse_options
    from .study.grid import parse_dsts
    from .study.runner import sweep

    measures = (["spatial"] if args.semantics == "spatial" else []) + \
        (["paths"] if args.paths else []) + (["spectral"] if args.spectral else [])
    settings = None
    dsts = [d for d in parse_dsts(args.dst or "static") if d is not None]
    data = args.data or ("synthetic" if args.train else None)
    if data is not None and data != "synthetic":
        import os

        from .errors import DataError

        if not os.path.isdir(data):
            raise DataError(f"--data {data!r} is not a directory; give a CIFAR-10/100 directory "
                            "(cifar-10-batches-py layout) or --data synthetic")
        data = os.path.abspath(data)
    if data is not None:
        settings = {"data": data}  # training data and the prune batches of SNIP/GraSP
    if args.train:
        from .torch.recipes import get_recipe

        get_recipe(args.train, epochs=args.epochs)  # a bad recipe fails before the sweep
        measures.append("train")
        settings = {"recipe": args.train, "data": data,
                    **({"epochs": args.epochs} if args.epochs else {}),
                    **({"device": args.device} if args.device else {}),
                    **({"update_every": args.update_every, "drop_fraction": args.drop_fraction,
                        "stop_fraction": args.stop_fraction} if dsts else {})}
        for dst in dsts:
            from .torch.dst import DynamicSparsity

            DynamicSparsity(dst, update_every=args.update_every,  # bad values fail now
                            drop_fraction=args.drop_fraction, stop_fraction=args.stop_fraction)
    elif dsts:
        raise GraphpaiError("--dst trains the points: add --train RECIPE")
    points = grid(model=args.model, methods=args.methods, budgets=args.budgets,
                  compressions=args.compressions, seeds=args.seeds,
                  options=parse_options(args.option), measures=measures, settings=settings,
                  dsts=args.dst or "static")
    params = {"methods": args.methods, "budgets": args.budgets,
              "compressions": args.compressions, "seeds": args.seeds,
              **({"dst": args.dst} if args.dst else {})}
    summary = sweep(points, args.out, workers=args.workers, scheduler=args.scheduler,
                    progress=progress(args), report=not args.no_report,
                    params=params)
    if args.json:
        print(json.dumps(jsonable(summary.to_dict()), indent=2, allow_nan=False))
    else:
        print(summary.text() + f"\nresults: {args.out}/results.csv, results.json, results.sqlite"
              + ("" if args.no_report else f"; report: {args.out}/report.html"))
    return 1 if summary.failed else 0


# ---------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="graphpai", description="Graph-theoretic audits, metrics and masks for sparse networks "
                                     "pruned at initialization.")
    parser.add_argument("--version", action="version", version=f"graphpai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        sub_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.arguments(sub_parser)
        sub_parser.set_defaults(run=cmd.run)
    return parser


def main(argv=None) -> int:
    """Run the graphpai command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        from ._results import check_writable

        for dest in getattr(args, "_writable", ()):
            if getattr(args, dest, None):
                check_writable(getattr(args, dest))
        if hasattr(args, "threads"):  # a command that computes: the torch thread policy
            from .torch.threads import torch_threads

            with torch_threads(args.threads):
                return int(args.run(args) or 0)
        return int(args.run(args) or 0)
    except GraphpaiError as exc:
        print(f"graphpai: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("graphpai: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
