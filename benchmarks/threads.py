"""Benchmark torch threads for the ranking methods (issue 13 item 14): SynFlow and SNIP on VGG-16
with torch's default thread count against one thread, in the same run.

Each measurement is a fresh subprocess (torch's thread pool is set once per process): torch's
default (one thread per core, ``OMP_NUM_THREADS`` unset) or ``torch.set_num_threads(1)``. The
two settings alternate, `--repeat` times; the table gives the median seconds, the ratio, the
machine's cores and load average, and what graphpai's policy
(:func:`graphpai.torch.threads.policy_threads`) would pick there.

    python benchmarks/threads.py [--rounds 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time, torch
threads, job, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
if threads != "default":
    torch.set_num_threads(int(threads))
import graphpai
from graphpai.torch import models
from graphpai.torch.data import synthetic_batches
from graphpai.torch import threads as policy
model = models.build("vgg16", seed=0)
data = synthetic_batches((3, 32, 32), 10, batch_size=100, seed=0)
start = time.perf_counter()
with policy.torch_threads(torch.get_num_threads()):  # time exactly this thread count
    if job == "synflow":
        graphpai.prune(model, "synflow", compression=100, iterations=rounds)
    else:
        graphpai.prune(model, "snip", compression=100, data=data)
print(json.dumps({"s": time.perf_counter() - start, "threads": torch.get_num_threads()}))
"""


def run(threads: str, job: str, rounds: int) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("OMP_NUM_THREADS", None)
    env.pop("MKL_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", CHILD, threads, job, str(rounds)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="SynFlow iterations")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from graphpai.torch.threads import free_cores, policy_threads

    import torch

    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} CPUs, load {load:.1f} at the start, torch default "
          f"{torch.get_num_threads()} threads; graphpai's policy picks "
          f"{policy_threads(None, torch.get_num_threads())} (free cores {free_cores()}); "
          f"median of {args.repeat}")
    print("| job | default threads s | 1 thread s | default / 1 thread |")
    print("|---|---|---|---|")
    for job, label in [("synflow", f"SynFlow VGG-16, {args.rounds} rounds"),
                       ("snip", "SNIP VGG-16, 100 images")]:
        times = {"default": [], "1": []}
        for _ in range(args.repeat):
            for threads in times:
                times[threads].append(run(threads, job, args.rounds)["s"])
        d, one = statistics.median(times["default"]), statistics.median(times["1"])
        print(f"| {label} | {d:.1f} | {one:.1f} | {d / one:.2f} |", flush=True)
    print(f"# load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
