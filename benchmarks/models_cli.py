"""Benchmark ``graphpai models`` (issue 13 item 19: listing the zoo without importing
``torch._dynamo``) against a baseline revision, in the same run.

Each call is a fresh ``python -m graphpai models`` process (the cost is mostly imports), run with
``PYTHONPATH`` on the baseline's ``git archive``d tree or on this checkout, alternating, and a
plain ``python -c "import torch"`` for scale. Medians of `--repeat` calls, in CPU seconds of the
child (user + system: the work done, which the machine's load disturbs little) and wall seconds.

    python benchmarks/models_cli.py [--baseline b581d71] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv, path) -> tuple[float, float]:
    """(wall s, CPU s of the child: user + system, which a loaded machine disturbs far less)."""
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="b581d71", help="a revision before the fix")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.baseline, "graphpai"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        runs = {"import torch": ([sys.executable, "-c", "import torch"], ROOT),
                "baseline": ([sys.executable, "-m", "graphpai", "models"], tmp),
                "current": ([sys.executable, "-m", "graphpai", "models"], ROOT)}
        times = {k: [] for k in runs}
        for _ in range(args.repeat):
            for k, (argv, path) in runs.items():
                times[k].append(timed(argv, path))
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, baseline {args.baseline}, "
          f"median of {args.repeat}")
    print("| clock | `import torch` s | baseline `graphpai models` s | current s | "
          "baseline / current |")
    print("|---|---|---|---|---|")
    for i, clock in enumerate(("CPU", "wall")):
        med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        print(f"| {clock} | {med['import torch']:.2f} | {med['baseline']:.2f} | "
              f"{med['current']:.2f} | {med['baseline'] / med['current']:.2f} |")


if __name__ == "__main__":
    main()
