"""Overhead of dynamic sparse training and topology tracking, as a ratio to a plain training step.

For each model (ResNet-20, VGG-16; random ERK masks at 10x), on one device in the same run:

- ``step``: one masked training step as ``graphpai.torch.train`` does it (forward, backward, zero
  the pruned gradients, SGD with Nesterov momentum, multiply by the masks), batch 128;
- ``set`` / ``rigl``: one mask update of :class:`graphpai.torch.dst.DynamicSparsity` (magnitude
  drop and regrowth in every layer, optimizer state reset; RigL includes copying the dense
  gradient on the update step);
- ``track``: one record of :class:`graphpai.torch.track.TopologyTracker` (channel audit, paths and
  effective nodes, spectral means of both profiles with the current weights, churn), and
  ``track_no_spectral`` without the spectral quantities.

Each is timed in `--repeat` interleaved rounds after a warm-up round (a load spike on a shared
machine hits all alike); a ratio is the median over rounds of (its time / that round's step). An
update every 100 steps costs ``ratio / 100`` of the training time; a record every K steps
``ratio / K``.

Run: python benchmarks/dst.py [--models resnet20,vgg16] [--device auto|cpu|cuda] [--repeat N]
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from graphpai.torch.dst import DynamicSparsity, initial_masks
from graphpai.torch.extract import to_graph
from graphpai.torch.models import build
from graphpai.torch.track import TopologyTracker
from graphpai.torch.train import TrainMasks, _prepare_masks, resolve_device


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name, device, repeat, batch):
    model = build(name, seed=0)
    graph = to_graph(model)
    masks = initial_masks(model, 10, seed=0)
    weights, bool_masks = _prepare_masks(model, masks)
    model.to(device)
    live = TrainMasks(weights, bool_masks)
    live.apply()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    live.optimizer = opt
    x = torch.randn(batch, *model.input_shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        live.mask_gradients()
        opt.step()
        live.apply()

    def backward_only():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    counter = iter(range(10 ** 9))
    dsts = {}
    for method in ("set", "rigl"):
        dsts[method] = DynamicSparsity(method, update_every=100, drop_fraction=0.3, seed=0)
        dsts[method].end_step = 10 ** 9  # an early update: drop fraction ~0.3
    trackers = {label: TopologyTracker(None, every=None, graph=graph, spectral=spectral)
                for label, spectral in (("track", True), ("track_no_spectral", False))}

    def timed(fn):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - start

    def round_():
        times = {"step": timed(step)}
        for method, dst in dsts.items():
            backward_only()  # the update step's backward (untimed: the step does it anyway)

            def update():
                grads = None
                if method == "rigl":
                    dst.on_backward(99, model, live, opt)  # copies |grad| on the update step
                    grads = dst._grads
                dst.update(live, 100 + next(counter), grads=grads)

            times[method] = timed(update)
        for label, tracker in trackers.items():
            times[label] = timed(lambda: tracker.record(next(counter), model, live))
        return times

    round_()  # warm-up
    rounds = [round_() for _ in range(repeat)]  # interleaved: a load spike hits all alike
    out = {"model": name, "device": str(device), "batch": batch,
           "kept": int(masks.kept()), "N": int(masks.numel())}
    for key in rounds[0]:
        out[f"{key}_s"] = statistics.median(r[key] for r in rounds)
    for key in ("set", "rigl", "track", "track_no_spectral"):
        out[f"{key}_ratio"] = statistics.median(r[key] / r["step"] for r in rounds)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,vgg16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# device {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for model in args.models.split(","):
        result = bench(model.strip(), device, args.repeat, args.batch)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in result.items()}))


if __name__ == "__main__":
    main()
