"""Training throughput: graphpai.torch.train vs a plain reference loop of the papers' kind.

Both train the same masked model (10x random masks) at batch 128 on the same device in the same
run. The reference is what the [SF]/[NPB] code does: a torch DataLoader over a Dataset that
pads, crops, flips and normalises one image at a time in Python, fp32, contiguous memory, masks
as torch.nn.utils.prune forward hooks. graphpai keeps the split on the device, augments the whole
batch in one gather, masks by multiplying after the step, and on CUDA uses bf16 autocast and
channels-last. The ratio of images/s is the figure of merit.

Run: python benchmarks/train.py [--steps N] [--models resnet20,vgg16] [--device cpu|cuda]
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import prune as torch_prune

from graphpai.torch.data import synthetic_data
from graphpai.torch.extract import prunable_modules
from graphpai.torch.models import build
from graphpai.torch.train import train


class PerImage(torch.utils.data.Dataset):
    def __init__(self, split):
        self.images, self.labels = split.images, split.labels
        self.mean, self.std = split.mean.view(-1, 1, 1), split.std.view(-1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = F.pad(self.images[i], (4, 4, 4, 4))
        t, l = np.random.randint(0, 9, size=2)
        x = x[:, t:t + 32, l:l + 32]
        if np.random.rand() < 0.5:
            x = x.flip(2)
        return (x - self.mean) / self.std, self.labels[i]


def masks_for(model, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.random(tuple(m.weight.shape)) < 0.1 for n, m in prunable_modules(model).items()}


def reference(name, split, steps, device):
    model = build(name, seed=0).to(device)
    for n, m in prunable_modules(model).items():
        torch_prune.custom_from_mask(m, "weight", torch.as_tensor(masks_for(model)[n], device=device))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(PerImage(split), batch_size=128, shuffle=True,
                                         num_workers=0, drop_last=True)
    model.train()
    done, started = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 1:  # the first step warms up
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += len(y) if i >= 1 else 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def ours(name, split, steps, device):
    model = build(name, seed=0)
    result = train(model, masks_for(model), split, recipe="mica-resnet20", epochs=2, device=device,
                   progress=False)
    return result.history[-1].images_per_s  # the second epoch: warm


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--models", default="resnet20,vgg16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for model in args.models.split(","):
        steps = args.steps or (100 if device.type == "cuda" else (12 if model == "resnet20" else 4))
        data = synthetic_data(10, (3, 32, 32), train_size=128 * (steps + 1), test_size=0,
                              val_fraction=0.0, seed=0)
        split = data.train
        split = type(split)((split.images * 40 + 120).clamp(0, 255).to(torch.uint8), split.labels,
                            split.num_classes, split.mean * 40 + 120, split.std * 40)
        ref = reference(model, split, steps, device)
        fast = ours(model, split, steps, device)
        rows.append({"model": model, "device": name, "steps": steps, "reference_img_s": ref,
                     "graphpai_img_s": fast, "ratio": fast / ref})
        print(json.dumps(rows[-1]))


if __name__ == "__main__":
    main()
