"""NPB (docs/npb.md): the exact layer solver against brute-force enumeration of the program and
against HiGHS on the full (unreduced) program, full functionality under the spatial audit and
under the autograd oracle (tests/oracles.py) on VGG-16, ResNet-20 and a concat DAG with the
whole budget kept, the move step on hand-sized nets (bridges; a case whose budget cannot all be
functional), ResNet-18 at 99.9%, same seed same mask, and [NPB]'s balance claim against RPI-ERK
on ResNet-20."""

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from graphpai.budgets import erk, uniform
from graphpai.errors import BudgetError, UnknownMethodError
from graphpai.functional import functional_edges
from graphpai.generators import GENERATORS
from graphpai.generators.npb import layer_objective, max_path, solve_layer, solve_npb


def definition(M, P, n, top, alpha, beta):
    """The program's objective, written from the issue's formula (pos(x) = max(x, 0))."""
    M = np.asarray(M)
    c_in, c_out = M.shape
    r, c = M.sum(1), M.sum(0)
    nodes = c_in + c_out - np.maximum(1 - r, 0).sum() - np.maximum(1 - c, 0).sum()
    path = float(np.asarray(P, float) @ r) / top if top > 0 else 0.0
    return (alpha * nodes / (c_in + c_out) + (1 - alpha) * path
            + beta * (n - np.maximum(1 - M, 0).sum()) / n)


def brute(P, n, K, c_out, alpha, beta):
    """Enumerate every M in {0..K}^(C_in x C_out) with sum <= n; max_path by enumeration too."""
    P = np.asarray(P, float)
    c_in = P.size
    Ms = [np.array(v).reshape(c_in, c_out)
          for v in itertools.product(range(K + 1), repeat=c_in * c_out) if sum(v) <= n]
    top = max(float(P @ M.sum(1)) for M in Ms)
    return max(definition(M, P, n, top, alpha, beta) for M in Ms), top


def full_milp(P, n, K, c_out, alpha, beta):
    """HiGHS on the full program: M_ij in 0..K, z_ij = [M_ij >= 1], u_i = [row i used],
    v_j = [column j used] (binaries bounded by the sums they indicate); max_path by an LP."""
    P = np.asarray(P, float)
    c_in = P.size
    # max_path: max sum_i P_i r_i, 0 <= r_i <= K C_out, sum r <= n (integral: a knapsack LP)
    lp = linprog(-P, A_ub=np.ones((1, c_in)), b_ub=[n], bounds=[(0, K * c_out)] * c_in)
    top = -lp.fun
    nm = c_in * c_out
    nv = 2 * nm + c_in + c_out  # M, z, u, v
    cost = np.zeros(nv)
    cost[:nm] = -(1 - alpha) * np.repeat(P, c_out) / top if top > 0 else 0.0
    cost[nm:2 * nm] = -beta / n
    cost[2 * nm:] = -alpha / (c_in + c_out)
    A, lb, ub = [], [], []
    row = np.zeros(nv)
    row[:nm] = 1
    A.append(row), lb.append(-np.inf), ub.append(n)
    for k in range(nm):  # z_k <= M_k
        row = np.zeros(nv)
        row[nm + k], row[k] = 1, -1
        A.append(row), lb.append(-np.inf), ub.append(0)
    for i in range(c_in):  # u_i <= sum_j M_ij
        row = np.zeros(nv)
        row[2 * nm + i] = 1
        row[i * c_out:(i + 1) * c_out] = -1
        A.append(row), lb.append(-np.inf), ub.append(0)
    for j in range(c_out):  # v_j <= sum_i M_ij
        row = np.zeros(nv)
        row[2 * nm + c_in + j] = 1
        row[j:nm:c_out] = -1
        A.append(row), lb.append(-np.inf), ub.append(0)
    upper = np.concatenate([np.full(nm, K), np.ones(nm + c_in + c_out)])
    res = milp(cost, constraints=LinearConstraint(np.array(A), lb, ub),
               integrality=np.ones(nv), bounds=Bounds(np.zeros(nv), upper),
               options={"mip_rel_gap": 0})
    assert res.success, res.message
    const = beta * (n - nm) / n  # sum pos(1 - M_ij) = C_in C_out - sum z
    return -res.fun + const, top


@pytest.mark.parametrize("solver", ["exact", "milp"])
def test_solver_equals_brute_force(solver):
    rng = np.random.default_rng(1)
    for case in range(60):
        c_in, c_out, K = rng.integers(1, 4), rng.integers(1, 4), rng.integers(1, 4)
        while (K + 1) ** (c_in * c_out) > 5000:  # keep the enumeration small
            c_out -= 1
        n = int(rng.integers(1, K * c_in * c_out + 1))
        P = rng.choice([0.0, 1.0, 2.0, 5.0], size=c_in)
        alpha, beta = float(rng.choice([0.0, 0.01, 0.5, 1.0])), float(rng.choice([0.0, 1.0, 3.0]))
        best, top = brute(P, n, K, c_out, alpha, beta)
        assert max_path(P, n, c_out, K) == pytest.approx(top)
        M = solve_layer(P, n, c_out, K, alpha=alpha, beta=beta, solver=solver, seed=case)
        assert M.shape == (c_in, c_out) and M.sum() <= n and M.min() >= 0 and M.max() <= K
        assert definition(M, P, n, top, alpha, beta) == pytest.approx(best, abs=1e-9), \
            (P, n, K, c_out, alpha, beta)
        assert layer_objective(M, P, n, max_p=K, alpha=alpha, beta=beta) == pytest.approx(best)


def test_exact_equals_highs_on_the_full_program():
    # layers too big to enumerate: the combinatorial optimum equals HiGHS on the unreduced program
    rng = np.random.default_rng(7)
    for case in range(30):
        c_in, c_out, K = int(rng.integers(2, 7)), int(rng.integers(2, 7)), int(rng.choice([1, 4, 9]))
        n = int(rng.integers(1, K * c_in * c_out + 1))
        P = rng.choice([0.0, 0.5, 1.0, 3.0, 10.0], size=c_in) * rng.integers(1, 3, size=c_in)
        alpha = float(rng.choice([0.01, 0.3, 0.9]))
        beta = float(rng.choice([0.0, 1.0, 2.0]))
        best, top = full_milp(P, n, K, c_out, alpha, beta)
        M = solve_layer(P, n, c_out, K, alpha=alpha, beta=beta, seed=case)
        assert M.max() <= K and M.sum() == n  # an optimum that keeps the whole budget
        assert definition(M, P, n, top, alpha, beta) == pytest.approx(best, abs=1e-7)


@given(c_in=st.integers(1, 12), c_out=st.integers(1, 12), k=st.sampled_from([1, 4, 9]),
       fill=st.floats(0.0, 1.0), alpha=st.floats(0.0, 1.0), beta=st.floats(0.0, 3.0),
       masses=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 7.0]), min_size=12, max_size=12),
       seed=st.integers(0, 2 ** 16))
@settings(max_examples=60)
def test_exact_and_milp_reach_the_same_value(c_in, c_out, k, fill, alpha, beta, masses, seed):
    # the combinatorial optimum equals HiGHS on the reduced program; both are feasible points of
    # the full program that keep the whole budget
    n = max(1, round(fill * k * c_in * c_out))
    P = np.array(masses[:c_in])
    a = solve_layer(P, n, c_out, k, alpha=alpha, beta=beta, seed=seed)
    b = solve_layer(P, n, c_out, k, alpha=alpha, beta=beta, solver="milp", seed=seed)
    top = max_path(P, n, c_out, k)
    for M in (a, b):
        assert M.shape == (c_in, c_out) and M.min() >= 0 and M.max() <= k
    assert a.sum() == n
    assert definition(a, P, n, top, alpha, beta) == pytest.approx(
        definition(b, P, n, top, alpha, beta), abs=1e-7)


def test_reference_path_norm_and_errors():
    # [NPB]'s code: q = floor(n / (K C_out)) = 0 takes every P: K C_out sum(P) + n max(P)
    assert max_path([1.0, 3.0, 2.0], 1, 2, 1, path_norm="reference") == 2 * 6 + 3
    assert max_path([1.0, 3.0, 2.0], 5, 2, 1, path_norm="reference") == 2 * (3 + 2) + 1 * 1
    with pytest.raises(UnknownMethodError, match="path_norm"):
        max_path([1.0], 1, 1, 1, path_norm="loose")
    with pytest.raises(BudgetError, match="outside"):
        solve_layer([1.0, 1.0], -1, 2, 1)
    with pytest.raises(BudgetError, match="alpha"):
        solve_layer([1.0], 1, 1, 1, alpha=2.0)
    with pytest.raises(UnknownMethodError, match="solver"):
        solve_layer([1.0], 1, 1, 1, solver="cvxpy")


def test_max_p_is_raised_to_hold_the_budget():
    # 2 x 2 kernels, K = 1 but n = 7: K becomes ceil(7 / 4) = 2 and every weight is placed
    M = solve_layer([1.0, 2.0], 7, 2, 1, seed=0)
    assert M.sum() == 7 and M.max() == 2


# ------------------------------------------------------------------------------ networks
_GRAPHS = {}


def graph_of(name):
    if name not in _GRAPHS:
        if name == "custom_dag":  # concat of two branches, grouped conv, depthwise residual
            from test_mica import zoo_graph
            _GRAPHS[name] = zoo_graph("custom_dag")
        elif name == "inception_dag":  # concat of four branches, dilation, 'same', pools
            from strategies import custom_dag

            from graphpai.torch.extract import to_graph
            _GRAPHS[name] = to_graph(*custom_dag())
        else:
            from graphpai.torch.extract import to_graph
            from graphpai.torch.models import build
            _GRAPHS[name] = to_graph(build(name, seed=0), (3, 32, 32))
    return _GRAPHS[name]


@pytest.mark.parametrize("name,compressions", [
    ("resnet20", [10, 100, 1000]), ("vgg16", [100, 10 ** 3.5]), ("custom_dag", [3, 10, 30]),
    ("inception_dag", [10, 100, 1000])])
def test_fully_functional_with_drift_reported(name, compressions):
    g = graph_of(name)
    for compression in compressions:
        budget = erk(g, compression)
        r = solve_npb(g, budget, seed=3)
        f = functional_edges(g, r.masks, semantics="spatial")
        assert {k: int((r.masks[k] & ~f[k]).sum()) for k in r.masks
                if (r.masks[k] & ~f[k]).any()} == {}, compression
        assert r.functional is True
        rows = {row.layer: row for row in r.layers}
        for k in r.masks:
            assert rows[k].kept == r.masks.kept(k)
            assert rows[k].budget == budget.counts[k]
            assert rows[k].drift == rows[k].kept - rows[k].budget
            assert rows[k].solved - rows[k].removed + rows[k].added == rows[k].kept
        assert r.kept == r.masks.kept() and r.budget == budget.total
        assert r.total_drift == r.kept - r.budget == -r.dropped
        d = r.to_dict()
        assert d["total_drift"] == r.total_drift and len(d["layers"]) == len(r.masks)


def test_same_seed_same_mask():
    g = graph_of("resnet20")
    budget = erk(g, 100)
    a = solve_npb(g, budget, seed=3).masks
    assert a == solve_npb(g, budget, seed=3).masks
    assert a != solve_npb(g, budget, seed=4).masks
    assert a == GENERATORS["npb"].func(g, budget, seed=3)


def test_without_move_the_program_keeps_the_budget():
    g = graph_of("resnet20")
    budget = erk(g, 100)
    r = solve_npb(g, budget, seed=0, move=False)
    assert r.masks.counts() == budget.counts and r.functional is None
    assert all(row.removed == row.added == 0 for row in r.layers)


def test_milp_solver_gives_the_same_objective_on_a_network():
    g = graph_of("resnet20")
    budget = erk(g, 100)
    for mass, first in (("channels", 3), ("pixels", 1)):
        a = solve_npb(g, budget, seed=0, move=False, path_mass=mass)
        b = solve_npb(g, budget, seed=0, move=False, solver="milp", path_mass=mass)
        # the first layers see the same path masses (with pixel masses, only the first: the
        # solvers may break ties differently, and the taps placed then differ)
        for x, y in zip(a.layers[:first], b.layers[:first]):
            assert x.objective == pytest.approx(y.objective, rel=1e-9)


def test_issue_12_balance_against_rpi_erk():
    # [NPB]: more effective paths than random pruning with the same budget, and (nearly) as many
    # effective nodes. Measured at seed 0 with the pixel path mass and the move step (bridges):
    # at 99.9% it holds (58 vs 7 nodes, 12.86 vs 1.99 log10 paths); at 99% the paths hold but
    # the nodes do not with the definition's max_path (395 vs 670), and both hold with the
    # reference's max_path (652 vs 670 nodes, 97%; 15.46 vs 14.20 log10 paths). docs/npb.md
    # records every point.
    from graphpai.generators.random import rpi
    from graphpai.paths import paths

    g = graph_of("resnet20")
    budget = erk(g, 1000)
    a = paths(g, solve_npb(g, budget, seed=0).masks)
    b = paths(g, rpi(g, budget, seed=0))
    assert a.log10_paths >= b.log10_paths
    assert a.effective_nodes >= 0.95 * b.effective_nodes
    budget = erk(g, 100)
    b = paths(g, rpi(g, budget, seed=0))
    a = paths(g, solve_npb(g, budget, seed=0).masks)
    assert a.log10_paths >= b.log10_paths
    a = paths(g, solve_npb(g, budget, seed=0, path_norm="reference").masks)
    assert a.log10_paths >= b.log10_paths
    assert a.effective_nodes >= 0.95 * b.effective_nodes


def test_uniform_budget_and_prune_entry_point():
    import graphpai

    g = graph_of("custom_dag")
    masks = graphpai.prune(g, "npb", budget="uniform", compression=5, seed=1, alpha=0.1)
    assert masks.kept() <= uniform(g, 5).total


def test_cli_options(tmp_path, capsys):
    from graphpai.cli import main
    from graphpai.masks import MaskSet

    out = tmp_path / "m.npz"
    assert main(["prune", "--model", "resnet20", "--method", "npb", "--compression", "100",
                 "--option", "alpha=0.5", "--option", "path_norm=reference", "--seed", "2",
                 "--masks-out", str(out)]) == 0
    g = graph_of("resnet20")
    expected = solve_npb(g, erk(g, 100), seed=2, alpha=0.5, path_norm="reference").masks
    assert MaskSet.load(str(out)) == expected
    assert "budget 2,715 weights: drift +0" in capsys.readouterr().out
    assert main(["prune", "--model", "resnet20", "--method", "npb", "--compression", "1e4",
                 "--masks-out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["drift"] == -erk(g, 1e4).total
    assert main(["prune", "--model", "resnet20", "--method", "npb", "--compression", "100",
                 "--option", "alpha=7", "--masks-out", str(out)]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err


def test_a_zero_layer_drops_everything_and_says_so():
    g = graph_of("resnet20")
    budget = erk(g, 10 ** 4)
    assert budget.zero_layers  # ERK gives some layer nothing here: no path can exist
    r = solve_npb(g, budget, seed=0)
    assert r.kept == 0 and r.dropped == budget.total and r.total_drift == -budget.total


# ------------------------------------------------------------------------------ pixel path mass
def _tiny_dag():
    """x(2, 4x4) -> c1 (3x3, pad 1) -> h(3, 4x4) -> c2 (3x3, stride 2, pad 1) -> y(3, 2x2);
    x -> sc (1x1, stride 2) -> s(3, 2x2); r = y + s; cat = [r, s] (6, 2x2); c3 (2x2) -> z(2, 1x1)."""
    from graphpai.graph import Group, Layer, Link, NetGraph

    def conv(name, shape, src, dst, stride, pad, size, out):
        return Layer(name, "conv", shape, src, dst, (stride, stride), ((pad, pad), (pad, pad)),
                     (1, 1), in_size=size, out_size=out)

    groups = [Group("x", 2, (4, 4)), Group("h", 3, (4, 4)), Group("y", 3, (2, 2)),
              Group("s", 3, (2, 2)), Group("r", 3, (2, 2)), Group("cat", 6, (2, 2)),
              Group("z", 2, (1, 1))]
    layers = [conv("c1", (3, 2, 3, 3), "x", "h", 1, 1, (4, 4), (4, 4)),
              conv("c2", (3, 3, 3, 3), "h", "y", 2, 1, (4, 4), (2, 2)),
              conv("sc", (3, 2, 1, 1), "x", "s", 2, 0, (4, 4), (2, 2)),
              conv("c3", (2, 6, 2, 2), "cat", "z", 1, 0, (2, 2), (1, 1))]
    links = [Link("r", "add", ("y", "s"), "r"), Link("cat", "concat", ("r", "s"), "cat")]
    return NetGraph(groups, layers, links, ["x"], ["z"])


def _brute_pixel_mass(g, masks):
    """Enumerate every path from every input pixel, one by one, over the explicit pixel graph
    (edges written from the conv geometry here); per group and channel, the number of paths
    ending at its pixels."""
    succ = {}  # (group, channel, (a, b)) -> successors

    def edge(u, v):
        succ.setdefault(u, []).append(v)

    for layer in g.layers.values():
        m = masks[layer.name]
        (sa, sb), ((pa, _), (pb, _)) = layer.stride, layer.padding
        h, w = layer.in_size
        for o, i, ta, tb in zip(*np.nonzero(m)):
            for qa, qb in itertools.product(*(range(n) for n in layer.out_size)):
                a, b = qa * sa + ta - pa, qb * sb + tb - pb
                if 0 <= a < h and 0 <= b < w:
                    edge((layer.source, i, (a, b)), (layer.target, o, (qa, qb)))
    for c, p in itertools.product(range(3), itertools.product(range(2), range(2))):
        edge(("y", c, p), ("r", c, p))
        edge(("s", c, p), ("r", c, p))
        edge(("r", c, p), ("cat", c, p))
        edge(("s", c, p), ("cat", 3 + c, p))
    mass = {name: np.zeros(group.channels) for name, group in g.groups.items()}

    def walk(node):  # every call is one path (from an input pixel to `node`)
        mass[node[0]][node[1]] += 1
        for nxt in succ.get(node, []):
            walk(nxt)

    for c, p in itertools.product(range(2), itertools.product(range(4), range(4))):
        walk(("x", c, p))
    return mass


def _random_masks(g, density, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.random(layer.weight_shape) < density for name, layer in g.layers.items()}


@pytest.mark.parametrize("density,seed", [(1.0, 0), (0.6, 1), (0.3, 2)])
def test_pixel_path_mass_equals_brute_force_enumeration(density, seed):
    from graphpai.engine import spatial_engine

    g = _tiny_dag()
    masks = _random_masks(g, density, seed)
    want = _brute_pixel_mass(g, masks)
    got = spatial_engine().path_mass(g, masks)
    assert set(got) == set(g.groups)
    for name, (values, scale) in got.items():
        assert values.shape == (g.groups[name].channels,)
        assert values * 10.0 ** scale == pytest.approx(want[name], rel=1e-12, abs=1e-9), name
    # place() sees, at every layer's input, the mass of the masks placed before it
    seen = {}

    def place(layer, mass):
        seen[layer.name] = mass[0] * 10.0 ** mass[1]
        return masks[layer.name]

    spatial_engine().path_mass(g, None, place=place)
    for name, layer in g.layers.items():
        assert seen[name] == pytest.approx(want[layer.source], rel=1e-12)


def test_npb_solves_each_layer_with_the_pixel_path_mass():
    # with move=False the masks are the program's: each layer's reported optimum is the
    # program's value of its counts under the brute-force pixel mass of the layers before it
    g = _tiny_dag()
    budget = uniform(g, 2)
    for mass, differs in (("pixels", False), ("channels", True)):
        r = solve_npb(g, budget, seed=0, move=False, path_mass=mass)
        want = _brute_pixel_mass(g, r.masks)
        gaps = []
        for row in r.layers:
            layer = g.layers[row.layer]
            m = r.masks[row.layer]
            counts = m.reshape(m.shape[0], m.shape[1], -1).sum(axis=2).T
            value = layer_objective(counts, want[layer.source], row.budget, max_p=row.max_p)
            gaps.append(abs(value - row.objective))
        assert (max(gaps) > 1e-9) is differs, (mass, gaps)
    with pytest.raises(UnknownMethodError, match="path_mass"):
        solve_npb(g, budget, path_mass="pixel")


# ------------------------------------------------------------------------------ the move step
_MODELS = {}


def model_of(name):
    """(model, input shape) of the graphs of graph_of (same seed, same layer names)."""
    if name not in _MODELS:
        if name == "inception_dag":
            from strategies import custom_dag
            _MODELS[name] = custom_dag()
        else:
            from graphpai.torch.models import build
            _MODELS[name] = (build(name, seed=0), (3, 32, 32))
    return _MODELS[name]


@pytest.mark.parametrize("name,compression", [
    ("vgg16", 100), ("vgg16", 10 ** 3.5), ("resnet20", 100), ("resnet20", 1000),
    ("inception_dag", 100), ("inception_dag", 1000)])
def test_every_kept_weight_functional_by_audit_and_gradient_oracle(name, compression):
    # the issue's acceptance: fully functional under the spatial audit AND under the independent
    # oracle (float64 autograd of the linearised model: positive random weights on the mask, an
    # all-ones input; a weight is functional iff d(sum of outputs)/dw != 0), with the whole
    # budget kept (these points have room for it: measured, every layer keeps its budget or
    # hands a few weights to another layer, and the total is exact)
    from oracles import vk_functional

    g = graph_of(name)
    budget = erk(g, compression)
    r = solve_npb(g, budget, seed=3)
    f = functional_edges(g, r.masks, semantics="spatial")
    assert all(np.array_equal(f[k], r.masks[k]) for k in r.masks)
    model, shape = model_of(name)
    oracle = vk_functional(model, r.masks, shape)
    assert {k: int((r.masks[k] & ~oracle[k]).sum()) for k in r.masks
            if (r.masks[k] & ~oracle[k]).any()} == {}
    assert r.functional is True and r.kept == budget.total and r.total_drift == 0
    assert r.dropped == 0
    rows = {row.layer: row for row in r.layers}
    assert sum(row.carried_in for row in r.layers) == sum(row.carried_out for row in r.layers)
    for k, row in rows.items():  # a layer off its budget holds (or lent) exactly that many
        assert row.drift == row.carried_in - row.carried_out, k
        assert row.solved - row.removed + row.added == row.kept
        assert row.bridged + row.filled <= row.added <= row.bridged + row.filled + row.carried_in


def _linear_chain():
    """x(2) -a-> h(4) -b-> k(2) -c-> y(1), all linear."""
    from graphpai.graph import Group, Layer, NetGraph

    return NetGraph([Group("x", 2), Group("h", 4), Group("k", 2), Group("y", 1)],
                    [Layer("a", "linear", (4, 2), "x", "h"), Layer("b", "linear", (2, 4), "h", "k"),
                     Layer("c", "linear", (1, 2), "k", "y")], [], ["x"], ["y"])


def test_bridges_rescue_dead_end_channels_by_hand():
    # a keeps all 8 weights, b: k0 <- h0 and k1 <- h1, h2, h3, c: y <- k0. Functional: x -> h0
    # (2), h0 -> k0, k0 -> y: 4 of 13. h1..h3 are dead ends (reached, co-reaching nothing),
    # each with 2 weights of a into it; b's 3 weights into k1 are dead and cannot be rescued
    # (c has no weight to spare). Without bridges nothing has room: every capable slot (x -> h0,
    # h0 -> k0, k0 -> y) is taken, so 9 weights are dropped. With bridges b spends its 3 dead
    # weights on h1 -> k0, h2 -> k0, h3 -> k0 (k0 is the only co-reached output), which makes
    # a's 6 weights functional: everything kept, every layer on its budget.
    from graphpai.generators.npb import _move

    g = _linear_chain()
    start = {"a": np.ones((4, 2), bool), "b": np.array([[1, 0, 0, 0], [0, 1, 1, 1]], bool),
             "c": np.array([[1, 0]], bool)}
    counts = {"a": 8, "b": 4, "c": 1}
    for bridges, kept_b in ((True, [[1, 1, 1, 1], [0, 0, 0, 0]]), (False, [[1, 0, 0, 0], [0] * 4])):
        masks = {k: v.copy() for k, v in start.items()}
        moves, functional, _ = _move(g, masks, counts, np.random.default_rng(0), "cpu",
                                     bridges=bridges)
        assert functional is True
        assert masks["b"].astype(int).tolist() == kept_b
        f = functional_edges(g, masks, semantics="spatial")
        assert all(np.array_equal(f[k], masks[k]) for k in masks)
        if bridges:
            assert masks["a"].all() and masks["c"].tolist() == [[True, False]]
            assert (moves["b"].bridged, moves["b"].removed) == (3, 3)
            assert sum(int(m.sum()) for m in masks.values()) == 13
        else:  # x -> h0, h0 -> k0, k0 -> y: the 4 weights functional from the start
            assert sum(int(m.sum()) for m in masks.values()) == 4
            assert masks["a"].astype(int).tolist() == [[1, 1], [0, 0], [0, 0], [0, 0]]


def test_budget_that_cannot_be_functional_drifts_by_hand():
    # x(1 channel, 1x1) -c1 (3x3, pad 1)-> h(2, 1x1) -c2 (3x3, pad 1)-> y(1, 1x1): on a one-pixel
    # map every tap but the centre one reads only padding, so at most 2 + 2 weights (the centre
    # taps) can ever be functional. With budgets 18 (c1 dense: both centre taps, so h0 and h1
    # are reached) and 9 (c2), NPB keeps exactly the 4 centre taps, whatever taps c2's program
    # drew: drift -23, -16 and -7 per layer, and says so.
    from graphpai.budgets import from_mask
    from graphpai.graph import Group, Layer, NetGraph

    def conv(name, shape, src, dst):
        return Layer(name, "conv", shape, src, dst, (1, 1), ((1, 1), (1, 1)), (1, 1),
                     in_size=(1, 1), out_size=(1, 1))

    g = NetGraph([Group("x", 1, (1, 1)), Group("h", 2, (1, 1)), Group("y", 1, (1, 1))],
                 [conv("c1", (2, 1, 3, 3), "x", "h"), conv("c2", (1, 2, 3, 3), "h", "y")],
                 [], ["x"], ["y"])
    c2 = np.zeros((1, 2, 3, 3), bool)
    c2.reshape(-1)[:9] = True
    budget = from_mask({"c1": np.ones((2, 1, 3, 3), bool), "c2": c2}, g)
    assert budget.counts == {"c1": 18, "c2": 9}
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    for seed in range(6):
        r = solve_npb(g, budget, seed=seed)
        assert r.masks["c1"].tolist() == [[centre.tolist()]] * 2
        assert r.masks["c2"].tolist() == [[centre.tolist()] * 2]
        assert (r.kept, r.total_drift, r.dropped) == (4, -23, 23) and r.functional is True
        assert [row.drift for row in r.layers] == [-16, -7]
        assert "kept 4 of budget 27 (drift -23" in r.summary()


def test_resnet18_at_999_keeps_its_budget():
    # ResNet-18 (CIFAR stem, 100 classes) at 99.9% with the pixel path mass: the program piles
    # every layer onto a few input channels, so ~9% of its 11,208 weights are functional as
    # placed and the functional part has free capable slots for only ~4.9k more (measured):
    # removing and filling alone ("fill") keeps ~5.4k. Bridges from the dead-end channels make
    # the program's weights into them functional: measured, the whole budget is kept at seeds
    # 0-3 with no layer off its budget. Asserted: every kept weight functional and at least 99%
    # of the budget kept (the issue's bar), and the "fill" mode below the "bridge" mode.
    from graphpai.torch.extract import to_graph
    from graphpai.torch.models import build

    g = to_graph(build("resnet18", num_classes=100, seed=0, cifar_stem=True), (3, 32, 32))
    budget = erk(g, 1000)
    r = solve_npb(g, budget, seed=0)
    f = functional_edges(g, r.masks, semantics="spatial")
    assert all(np.array_equal(f[k], r.masks[k]) for k in r.masks) and r.functional is True
    assert r.kept >= 0.99 * budget.total and r.kept <= budget.total
    assert r.total_drift == r.kept - budget.total == -r.dropped
    assert r == solve_npb(g, budget, seed=0) or r.masks == solve_npb(g, budget, seed=0).masks
    fill = solve_npb(g, budget, seed=0, move="fill")
    f = functional_edges(g, fill.masks, semantics="spatial")
    assert all(np.array_equal(f[k], fill.masks[k]) for k in fill.masks)
    assert fill.kept < r.kept


def test_same_seed_same_mask_through_the_move_step():
    g = graph_of("inception_dag")
    budget = erk(g, 300)
    a = solve_npb(g, budget, seed=5)
    b = solve_npb(g, budget, seed=5)
    assert a.masks == b.masks and a.rows() != [] and [
        {k: v for k, v in row.items() if k != "seconds"} for row in a.rows()] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in b.rows()]
    assert a.masks != solve_npb(g, budget, seed=6).masks


def test_move_modes_and_summary():
    g = graph_of("resnet20")
    budget = erk(g, 1000)
    r = solve_npb(g, budget, seed=0, move="fill")
    assert r.moved == "fill" and all(row.bridged == 0 for row in r.layers)
    assert solve_npb(g, budget, seed=0, move=True).masks == solve_npb(g, budget, seed=0).masks
    assert solve_npb(g, budget, seed=0, move="false").functional is None
    with pytest.raises(UnknownMethodError, match="move"):
        solve_npb(g, budget, move="teleport")
    r = solve_npb(g, budget, seed=0)
    line = r.table().splitlines()[-1]
    assert line == r.summary()
    assert f"kept {r.kept:,} of budget {r.budget:,} (drift {r.total_drift:+,}" in line
    assert f"{r.carried:,} weights held by another layer" in line
    d = r.to_dict()
    assert d["carried"] == r.carried and d["audits"] == r.audits >= 1


def test_an_engine_without_a_call_gets_a_clear_error():
    from graphpai.engine import set_spatial_engine, spatial_engine
    from graphpai.errors import GraphpaiError

    g = _linear_chain()
    budget = uniform(g, 2)

    class Partial:  # an engine that can audit but not count path masses
        activity = staticmethod(spatial_engine().activity)

    before = set_spatial_engine(Partial())
    try:
        with pytest.raises(GraphpaiError, match=r"no path_mass\(\).*path_mass='channels'"):
            solve_npb(g, budget, seed=0)
        r = solve_npb(g, budget, seed=0, path_mass="channels")  # the fix the message names
        assert r.functional is True
        set_spatial_engine(object())
        with pytest.raises(GraphpaiError, match=r"no activity\(\).*move=False"):
            solve_npb(g, budget, seed=0, path_mass="channels")
        assert solve_npb(g, budget, seed=0, path_mass="channels", move=False).functional is None
    finally:
        set_spatial_engine(before)


def test_grouped_budget_goes_to_the_groups_a_path_feeds():
    # a depthwise conv at high sparsity keeps a few groups: those must be channels that the
    # layers before it feed (P > 0), or nothing after it can be functional
    from graphpai.generators.npb import _group_split

    mass = np.array([0.0, 5.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0])  # 8 depthwise groups, 1 channel
    rng = np.random.default_rng(0)
    assert _group_split(3, mass, 8, 9, rng).tolist() == [0, 1, 0, 1, 0, 1, 0, 0]
    assert _group_split(2, mass, 8, 9, rng).tolist() == [0, 1, 0, 1, 0, 0, 0, 0]  # largest first
    split = _group_split(28, mass, 8, 9, rng)  # the fed groups full, the last 1 over the rest
    assert split[[1, 3, 5]].tolist() == [9, 9, 9] and split.sum() == 28 and split.max() == 9
    assert _group_split(5, np.zeros(4), 4, 9, rng).sum() == 5  # nothing fed: evenly over all
    assert _group_split(7, mass[:1], 1, 9, rng).tolist() == [7]


def test_mobilenetv2_at_999_keeps_its_budget():
    # depthwise convs: with the budget split evenly over the groups (the first ones taking the
    # remainder) ERK at 99.9% kept 0 of 2,206 weights (measured): the few groups it kept were
    # channels nothing fed. Split over the fed groups, the whole budget is kept (measured: 108
    # weights held by another layer) and every kept weight is functional.
    from graphpai.torch import models
    from graphpai.torch.extract import to_graph

    g = to_graph(models.build("mobilenetv2", seed=0), models.input_shape("mobilenetv2"))
    budget = erk(g, 1000)
    r = solve_npb(g, budget, seed=0)
    f = functional_edges(g, r.masks, semantics="spatial")
    assert all(np.array_equal(f[k], r.masks[k]) for k in r.masks) and r.functional is True
    assert r.kept == budget.total


def test_surplus_of_bridges_is_trimmed_and_the_mask_stays_functional(monkeypatch):
    # LeNet-5 at 99% (ERK): the bridges rescue more than their estimate (measured: 80 weights
    # above the total budget at seed 0), the surplus is trimmed from the fullest kernels, and
    # the rounds after it still end fully functional on the whole budget
    import sys

    from graphpai.torch import models
    from graphpai.torch.extract import to_graph

    npb_module = sys.modules["graphpai.generators.npb"]  # the package's `npb` is the function
    trims = []
    trim = npb_module._trim

    def spy(masks, need, over, moves, rng):
        trims.append(over)
        return trim(masks, need, over, moves, rng)

    monkeypatch.setattr(npb_module, "_trim", spy)
    g = to_graph(models.build("lenet5", seed=0), models.input_shape("lenet5"))
    budget = erk(g, 100)
    r = solve_npb(g, budget, seed=0)
    assert trims and trims[0] > 0
    f = functional_edges(g, r.masks, semantics="spatial")
    assert all(np.array_equal(f[k], r.masks[k]) for k in r.masks) and r.functional is True
    assert r.kept == budget.total
