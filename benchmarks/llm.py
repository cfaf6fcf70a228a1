"""Benchmark issue 11 item 4: audit (channel and spatial), paths and spectral of a ~1B-parameter
Llama-style decoder mask, at 50% unstructured and at 2:4.

The model: hidden 2048, 16 decoder layers (q, k, v, o projections of 2048 x 2048; a SwiGLU MLP of
gate and up 5632 x 2048 and down 2048 x 5632), vocabulary 32000, an untied LM head, 953M
parameters of which 888M are the prunable weights of 113 linear layers (the token embedding is
not pruned, as in the LLM pruning literature). Layer names follow Hugging Face's Llama
(``model.layers.3.mlp.up_proj``).

Graphs (``--graph``):

- ``stack``: the Llama shapes with only residual adds joining the branches (q, k, v summed into
  o; gate and up summed into down): every engine runs on it, so it measures the engines on
  LLM-size masks.
- ``decoder``: the real topology on the NetGraph: RMSNorm links, RoPE's pairing of features,
  attention heads (``attention`` link: 16 heads of 128), the SwiGLU product (``mul``), the
  residual stream.
- ``torch``: ``graphpai.to_graph`` of a Llama-style ``nn.Module`` built on the meta device (no
  weights are allocated), when the extraction supports it.

Masks (``--masks``): ``unstructured`` keeps exactly half of every layer (RPI with the uniform
budget at compression 2, seed 0); ``2:4`` keeps 2 of every 4 consecutive input weights of every
row (random within groups, seed 0). Weights are not needed: the audit, paths and binary spectral
quantities depend on the mask only (the weighted [FS] quantities are left out: they need the
float weights, 3.6 GB in float32).

Each (graph, mask) case runs in a fresh subprocess that reports the seconds of each step and its
peak RSS (``ru_maxrss``); a step that fails prints its one-line error. Before it starts, the case
checks that its masks fit in the memory available and otherwise stops with the layer and the GiB
needed (``--hidden 65536`` shows it).

Usage::

    python benchmarks/llm.py [--graph stack decoder] [--masks unstructured 2:4]
        [--steps mask audit-channel audit-spatial paths spectral] [--layers 16] [--json out.json]

Record results in benchmarks/README.md with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

STEPS = ("mask", "audit-channel", "audit-spatial", "paths", "spectral")


# ------------------------------------------------------------------------------- the graphs
def llama_graph(kind="stack", *, layers=16, hidden=2048, mlp=5632, vocab=32000, heads=16,
                tokens=None, rope=True):
    """The NetGraph of a Llama-style decoder (see the module docstring); no torch.

    ``tokens`` positions (default: none for ``stack``, 2 for ``decoder``). Two tokens give the
    spatial answer of any sequence length: under causal attention token 0 sees only itself
    (softmax over one key is constant, so Q and K do not matter there) and every later token
    sees two or more keys, all alike under the all-ones input; RoPE rotates by 0 at token 0 and
    pairs feature j with its rotate-half partner at the others (``rope=False`` leaves it out).
    """
    import numpy as np

    from graphpai.graph import ChannelMap, Group, Layer, Link, NetGraph

    t = (0 if kind == "stack" else 2) if tokens is None else tokens
    size = (t,) if t else ()
    groups, ops = [Group("embed", hidden, size)], []

    def group(name, channels):
        groups.append(Group(name, channels, size))
        return name

    def linear(name, source, out, inp):
        target = group(name + ":out", out)
        ops.append(Layer(name, "linear", (out, inp), source, target, in_size=size, out_size=size))
        return target

    def link(name, kind_, sources, channels, **params):
        target = group(name, channels)
        ops.append(Link(name, kind_, tuple(sources), target, params))
        return target

    def per_position(rows, cols, channels):
        """A channel map as element pairs in (channels, tokens) order, at every token."""
        if not t:
            return ChannelMap(rows, cols)
        pos = np.arange(t)
        return ChannelMap((rows[:, None] * t + pos).ravel(), (cols[:, None] * t + pos).ravel())

    head_dim = hidden // heads
    j = np.arange(hidden)
    partner = (j // head_dim) * head_dim + (j % head_dim + head_dim // 2) % head_dim
    pairs = ChannelMap(np.concatenate([j, j]), np.concatenate([j, partner]))  # rotate_half
    if t:  # token 0: rotation by angle 0 (the identity); later tokens: both terms
        later = np.arange(1, t)
        rows = np.concatenate([j * t, (j[:, None] * t + later).ravel(),
                               (j[:, None] * t + later).ravel()])
        cols = np.concatenate([j * t, (j[:, None] * t + later).ravel(),
                               (partner[:, None] * t + later).ravel()])
        rope_elements = ChannelMap(rows, cols)
        tq, tk = np.tril_indices(t)
        causal = ChannelMap(tq, tk)
    else:
        rope_elements, causal = pairs, None
    channels = tuple(int(c) for c in j)
    heads_of = tuple(int(c) // head_dim for c in j)
    eye = ChannelMap(np.arange(mlp), np.arange(mlp))
    eye_elements = per_position(np.arange(mlp), np.arange(mlp), mlp)
    x = "embed"
    for i in range(layers):
        p = f"model.layers.{i}"
        h = x if kind == "stack" else link(f"{p}.input_layernorm", "norm", [x], hidden,
                                             centred=False, groups=1, positions="each")
        q = linear(f"{p}.self_attn.q_proj", h, hidden, hidden)
        k = linear(f"{p}.self_attn.k_proj", h, hidden, hidden)
        v = linear(f"{p}.self_attn.v_proj", h, hidden, hidden)
        if kind == "stack":
            a = link(f"{p}.self_attn.sum", "add", [q, k, v], hidden)
        else:
            if rope:
                q = link(f"{p}.self_attn.rope_q", "regroup", [q], hidden, maps=[pairs],
                         elements=[rope_elements])
                k = link(f"{p}.self_attn.rope_k", "regroup", [k], hidden, maps=[pairs],
                         elements=[rope_elements])
            a = link(f"{p}.self_attn.attention", "attention", [q, k, v], hidden,
                     q=channels, k=channels, pair_head=heads_of, v=channels, v_head=heads_of,
                     allowed=causal)
        o = linear(f"{p}.self_attn.o_proj", a, hidden, hidden)
        x = link(f"{p}.residual_attn", "add", [x, o], hidden)
        h = x if kind == "stack" else link(f"{p}.post_attention_layernorm", "norm", [x], hidden,
                                             centred=False, groups=1, positions="each")
        gate = linear(f"{p}.mlp.gate_proj", h, mlp, hidden)
        up = linear(f"{p}.mlp.up_proj", h, mlp, hidden)
        if kind == "stack":
            act = link(f"{p}.mlp.sum", "add", [gate, up], mlp)
        else:
            act = link(f"{p}.mlp.act_mul", "mul", [gate, up], mlp, maps=[eye, eye],
                       elements=[eye_elements, eye_elements])
        down = linear(f"{p}.mlp.down_proj", act, hidden, mlp)
        x = link(f"{p}.residual_mlp", "add", [x, down], hidden)
    if kind != "stack":
        x = link("model.norm", "norm", [x], hidden, centred=False, groups=1, positions="each")
    logits = linear("lm_head", x, vocab, hidden)
    return NetGraph(groups, [o for o in ops if isinstance(o, Layer)],
                    [o for o in ops if isinstance(o, Link)], ["embed"], [logits])


def llama_module(*, layers=16, hidden=2048, mlp=5632, vocab=32000, heads=16):
    """A Llama-style decoder as an nn.Module on the meta device (for ``--graph torch``)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(hidden, hidden, bias=False)
            self.k_proj = nn.Linear(hidden, hidden, bias=False)
            self.v_proj = nn.Linear(hidden, hidden, bias=False)
            self.o_proj = nn.Linear(hidden, hidden, bias=False)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (p(x).view(b, t, heads, -1).transpose(1, 2)
                       for p in (self.q_proj, self.k_proj, self.v_proj))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o_proj(y.transpose(1, 2).reshape(b, t, hidden))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = nn.Linear(hidden, mlp, bias=False)
            self.up_proj = nn.Linear(hidden, mlp, bias=False)
            self.down_proj = nn.Linear(mlp, hidden, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_layernorm, self.post_attention_layernorm = RMSNorm(hidden), RMSNorm(hidden)
            self.self_attn, self.mlp = Attention(), MLP()

        def forward(self, x):
            x = x + self.self_attn(self.input_layernorm(x))
            return x + self.mlp(self.post_attention_layernorm(x))

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, hidden)
            self.layers = nn.ModuleList(Block() for _ in range(layers))
            self.norm = RMSNorm(hidden)

        def forward(self, ids):
            x = self.embed_tokens(ids)
            for block in self.layers:
                x = block(x)
            return self.norm(x)

    class Llama(nn.Module):
        input_dtype = torch.long  # token ids

        def __init__(self):
            super().__init__()
            self.model = Inner()
            self.lm_head = nn.Linear(hidden, vocab, bias=False)

        def forward(self, ids):
            return self.lm_head(self.model(ids))

    with torch.device("meta"):
        return Llama()


# ------------------------------------------------------------------------------- one case
def check_fits(graph, steps) -> None:
    """Stop with one line naming the biggest layer and the GiB needed when the masks (and the
    functional masks of an audit) cannot fit in the memory available."""
    from graphpai.errors import GraphpaiError
    from graphpai._memory import available_memory

    copies = 1 + any(s.startswith("audit") or s == "paths" for s in steps)
    need = copies * graph.num_weights  # one byte per weight and copy
    biggest = max(graph.layers.values(), key=lambda layer: layer.numel)
    free = available_memory()
    if free is not None and need > 0.8 * free:
        raise GraphpaiError(
            f"{graph.num_weights / 1e9:.2f}B weights need {need / 2**30:.1f} GiB of masks but only "
            f"{free / 2**30:.1f} GiB is free; the biggest layer {biggest.name!r} "
            f"{biggest.weight_shape} alone needs {biggest.numel / 2**30:.2f} GiB per mask")


def run_case(graph_kind, mask_kind, steps, sizes, seed=0) -> dict:
    import resource
    import time

    import numpy as np

    import graphpai
    from graphpai.budgets import uniform
    from graphpai.errors import GraphpaiError
    from graphpai.generators import nm_masks, rpi
    from graphpai.paths import channel_paths, effective_paths

    out = {"graph": graph_kind, "masks": mask_kind, "steps": {}}

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB

    start = time.perf_counter()
    try:
        if graph_kind == "torch":
            import torch

            from graphpai.torch.extract import to_graph

            model = llama_module(**sizes)  # 2 token ids stand for any length (llama_graph)
            graph = to_graph(model, input_shape=(2,), input_dtype=torch.long)
        else:
            graph = llama_graph(graph_kind, **sizes)
        check_fits(graph, steps)
    except GraphpaiError as exc:
        out["error"] = f"graph: {exc}"
        return out
    except Exception as exc:  # the extraction may not support the model yet
        out["error"] = f"graph: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        return out
    out["graph_s"] = time.perf_counter() - start
    out["layers"] = len(graph.layers)
    out["weights"] = graph.num_weights
    blocks = sizes.get("layers", 16)

    def timed(name, fn):
        if name not in steps:
            return None
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            value = fn()
        except GraphpaiError as exc:
            out["steps"][name] = {"error": str(exc)}
            return None
        except Exception as exc:  # recorded, not raised: one failing step leaves the others
            out["steps"][name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            return None
        seconds = time.perf_counter() - t0
        out["steps"][name] = {"s": seconds, "cpu_s": time.process_time() - c0,
                              "s_per_layer": seconds / len(graph.layers),
                              "s_per_block": seconds / blocks, "peak_gib": peak()}
        return value

    def make_masks():
        if mask_kind == "unstructured":
            return rpi(graph, uniform(graph, 2), seed=seed)
        return nm_masks(graph, mask_kind, scores="random", seed=seed)

    t0, c0 = time.perf_counter(), time.process_time()
    masks = make_masks()
    out["steps"]["mask"] = {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                            "kept": masks.kept(),
                            "peak_gib": peak(),
                            "nm_compliant_2_4": all(masks.nm_compliant("2:4").values())}
    result = timed("audit-channel", lambda: graphpai.audit(graph, masks, nm="2:4"))
    if result is not None:
        out["steps"]["audit-channel"].update(
            functional=result.functional, corrected_compression=result.corrected_compression,
            nm_compliant_layers=sum(bool(r.nm_compliant) for r in result.layers))
        del result
    result = timed("audit-spatial", lambda: graphpai.audit(graph, masks, semantics="spatial"))
    if result is not None:
        out["steps"]["audit-spatial"].update(functional=result.functional)
        del result
    value = timed("paths", lambda: (effective_paths(graph, masks), channel_paths(graph, masks)))
    if value is not None:
        out["steps"]["paths"].update(log10_paths=value[0], log10_channel_paths=value[1])
    report = timed("spectral", lambda: graphpai.spectral(graph, masks))
    if report is not None:
        rows = report.layers
        out["steps"]["spectral"].update(
            scored=sum(r.delta_r is not None for r in rows),
            mean_delta_r_norm=float(np.mean([r.delta_r_norm for r in rows
                                             if r.delta_r_norm is not None] or [np.nan])))
    out["peak_gib"] = peak()
    out["total_s"] = time.perf_counter() - start
    out["total_cpu_s"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    return out


def _child(args) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sizes = dict(layers=args.layers, hidden=args.hidden, mlp=args.mlp, vocab=args.vocab)
    print(json.dumps(run_case(args.graph[0], args.masks[0], args.steps, sizes)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", nargs="+", default=["stack", "decoder"],
                        choices=["stack", "decoder", "torch"])
    parser.add_argument("--masks", nargs="+", default=["unstructured", "2:4"])
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--mlp", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    results = []
    for graph_kind in args.graph:
        for mask_kind in args.masks:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--graph", graph_kind,
                   "--masks", mask_kind, "--steps", *args.steps, "--layers", str(args.layers),
                   "--hidden", str(args.hidden), "--mlp", str(args.mlp), "--vocab",
                   str(args.vocab), "--threads", str(args.threads)]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode or not lines:
                tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                result = {"graph": graph_kind, "masks": mask_kind,
                          "error": f"exit {proc.returncode}: {tail}"}
            else:
                result = json.loads(lines[-1])
            results.append(result)
            print(_summary(result), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


def _summary(r) -> str:
    head = f"{r['graph']:8s} {r['masks']:12s}"
    if "error" in r:
        return f"{head} ERROR {r['error']}"
    parts = [f"{r['weights'] / 1e6:.0f}M weights in {r['layers']} layers, graph {r['graph_s']:.1f}s"]
    for name, step in r["steps"].items():
        if "error" in step:
            parts.append(f"{name}: ERROR {step['error']}")
        else:
            extra = {k: v for k, v in step.items()
                     if k not in ("s", "cpu_s", "s_per_layer", "s_per_block", "peak_gib")}
            per = f", {step['s_per_layer'] * 1e3:.0f} ms/layer" if "s_per_layer" in step else ""
            parts.append(f"{name}: {step['s']:.1f}s (cpu {step['cpu_s']:.1f}s){per}, "
                         f"peak {step['peak_gib']:.2f} GiB {extra}")
    parts.append(f"total {r['total_s']:.1f}s (cpu {r['total_cpu_s']:.1f}s), "
                 f"peak {r['peak_gib']:.2f} GiB")
    return head + "\n  " + "\n  ".join(parts)


if __name__ == "__main__":
    main()
