"""Batched top-k singular values (graphpai.spectral.batched; docs/spectral.md, "many small
problems"): against numpy's dense SVD on many shapes in one call, and layer rows equal to the
per-subgraph path (one singular_values_compact call per K_d) to 1e-12."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import dense_top_singular_values, naive_layer_spectrum

from graphpai.spectral import batched, layer
from graphpai.spectral import layer_spectrum
from graphpai.spectral.batched import column_block_values, singular_values_many
from graphpai.spectral.solvers import singular_values_compact


def _close(got, ref, rel=1e-12):
    scale = max(float(np.max(ref)), 1e-300)
    assert np.all(np.abs(np.asarray(got) - ref) <= rel * scale), (got, ref)


def _zoo(rng):
    """Small matrices of every awkward kind, 0/1 and weighted."""
    out = []
    for shape in [(1, 1), (1, 9), (9, 1), (2, 2), (3, 7), (7, 3), (12, 12), (20, 5), (5, 40),
                  (33, 17), (64, 64), (90, 130)]:
        for density in (0.1, 0.4, 1.0):
            b = (rng.random(shape) < density).astype(float)
            out += [b, b * rng.random(shape), b * rng.standard_normal(shape)]
    u, v = rng.random(15), rng.random(11)
    out += [
        np.zeros((4, 6)), np.zeros((0, 5)), np.zeros((3, 0)),         # empty and all-zero
        np.outer(u, v), np.outer(u > 0.5, v > 0.3).astype(float),     # rank 1
        np.tile(rng.random(8) < 0.5, (10, 1)).astype(float),          # equal rows
        np.eye(7), 3.0 * np.eye(4), np.ones((6, 6)) - np.eye(6),      # repeated sigma_1 / sigma_2
        sp.block_diag([np.ones((3, 4))] * 3).toarray(),               # three equal blocks
        np.outer(u, v) + 1e-9 * rng.random((15, 11)),                 # tiny nonzero sigma_2
    ]
    return out


@pytest.mark.parametrize("seed", range(3))
def test_many_small_matrices_match_dense_svd(seed):
    rng = np.random.default_rng(seed)
    mats = _zoo(rng)
    rng.shuffle(mats)  # mixed sizes and kinds in one call
    got = singular_values_many(mats, 3)
    for a, g in zip(mats, got):
        _close(g, dense_top_singular_values(a, 3))


def test_sparse_inputs_and_equal_size_groups():
    rng = np.random.default_rng(7)
    mats = [sp.csr_array((rng.random((30, 20)) < 0.2).astype(float)) for _ in range(25)]
    mats += [sp.csc_array(rng.random((20, 30)) * (rng.random((20, 30)) < 0.3)) for _ in range(25)]
    got = singular_values_many(mats, 2)
    for a, g in zip(mats, got):
        _close(g, dense_top_singular_values(a, 2))


def test_zero_and_one_by_n_values_are_exact():
    v = singular_values_many([np.zeros((3, 3)), np.arange(1.0, 6.0)[None, :], np.ones((1, 4)),
                              np.ones((5, 1))], 2)
    assert v[0].tolist() == [0.0, 0.0]
    assert v[1, 1] == 0.0 and v[1, 0] == pytest.approx(np.sqrt(55.0), rel=1e-15)
    assert v[2].tolist() == [2.0, 0.0] and v[3].tolist() == [np.sqrt(5.0), 0.0]


@pytest.mark.parametrize("max_side", [4, 16])
def test_batched_lanczos_on_components_matches_dense_svd(monkeypatch, max_side):
    # max_side below the matrices' sides, and the cost model told to prefer Lanczos, send the
    # non-negative ones to the component split and batched Lanczos: equal components (repeated
    # sigma_1), one-column and one-row components, kept zero weights, rank-deficient
    # components; signed ones to singular_values_compact
    chunks = []
    run = batched._lanczos_chunk
    monkeypatch.setattr(batched, "_lanczos_pays", lambda *a: True)
    monkeypatch.setattr(batched, "_lanczos_chunk",
                        lambda p, *a: chunks.append(len(p)) or run(p, *a))
    rng = np.random.default_rng(max_side)
    mats = []
    for shape, density in [((60, 40), 0.05), ((80, 30), 0.1), ((40, 90), 0.08), ((50, 50), 0.3)]:
        b = (rng.random(shape) < density).astype(float)
        mats += [b, b * rng.random(shape)]
    block = (rng.random((12, 9)) < 0.4).astype(float)
    mats.append(sp.block_diag([block, block, np.ones((1, 5)), np.ones((4, 1))]).toarray())
    c4 = np.eye(4) + np.roll(np.eye(4), 1, axis=1)  # an even cycle: sigma 2, sqrt 2, sqrt 2, 0
    mats.append(sp.block_diag([c4] * 5).toarray())  # sigma_1 = sigma_2 = 2
    x = mats[1].copy()
    x[np.argwhere(x)[0][0], np.argwhere(x)[0][1]] = 0.0  # a zero weight links nothing
    mats.append(x)
    mats.append(np.outer(rng.random(40), rng.random(30) < 0.5) * (rng.random((40, 30)) < 0.9))
    mats.append(rng.standard_normal((30, 25)))  # signed: not Lanczos
    got = singular_values_many(mats, 3, max_side=max_side)
    for a, g in zip(mats, got):
        _close(g, dense_top_singular_values(a, 3))
    assert got[-5][0] == pytest.approx(got[-5][1], rel=1e-12)  # the equal blocks
    assert chunks and sum(chunks) >= 8  # the Lanczos batch ran, on many components at once


def test_batched_lanczos_on_large_sparse_layers():
    rng = np.random.default_rng(11)
    mats = []
    for shape, degree in [((512, 1041), 3), ((256, 500), 3), ((300, 200), 4)]:
        rows = np.concatenate([rng.choice(shape[0], degree, replace=False)
                               for _ in range(shape[1])])
        b = sp.csc_array((np.ones(len(rows)), (rows, np.repeat(np.arange(shape[1]), degree))),
                         shape=shape)
        mats += [b, b * rng.random(shape)]
    got = singular_values_many(mats, 2)
    for a, g in zip(mats, got):
        _close(g, dense_top_singular_values(a, 2))


@pytest.mark.parametrize("sparse", [False, True])
def test_column_blocks_match_one_solve_per_block(sparse):
    rng = np.random.default_rng(3)
    m = (rng.random((70, 300)) < 0.08)
    w = np.abs(rng.standard_normal(m.shape))
    kept = np.argwhere(m)[:5]
    w[kept[:, 0], kept[:, 1]] = 0.0  # kept zero weights
    x = np.where(m, w, 0.0)
    bounds = np.sort(rng.choice(np.arange(1, 300), 14, replace=False))
    blocks = [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]
    want = rng.random(len(blocks)) < 0.7
    if sparse:
        mm = sp.csc_array(m.astype(float))
        xx = sp.csc_array(x)
        xx.eliminate_zeros()
        x_on_m = w[mm.indices, np.repeat(np.arange(300), np.diff(mm.indptr))]
        got_b, got_w = column_block_values(mm, xx, x_on_m, blocks, 2, want_weighted=want,
                                           max_side=8)
    else:
        got_b, got_w = column_block_values(m.astype(np.float32), x, None, blocks, 2,
                                           want_weighted=want)
    for n, (start, count) in enumerate(blocks):
        ref = singular_values_compact(m[:, start:start + count].astype(float), 2, binary=True)
        _close(got_b[n], ref)
        if want[n]:
            _close(got_w[n], singular_values_compact(x[:, start:start + count], 2))
        else:
            assert got_w[n].tolist() == [0.0, 0.0]



@pytest.mark.parametrize("per_entry", [0.0, 1.0, "mixed"])
def test_sparse_blocks_as_full_height_slices(monkeypatch, per_entry):
    """Column blocks of a CSC matrix go as full-height dense slices (_full_height_pays), through
    the sparse route, or split between the two: the values are the dense SVD's either way,
    including all-ones (rank 1), one-column, repeated-value, empty-row and kept-zero blocks."""
    rng = np.random.default_rng(17)
    m = rng.random((40, 260)) < 0.3
    m[:, 0:6] = True                                        # an all-ones block: sigma_2 = 0
    m[:, 6:14] = False
    m[np.arange(8) * 5, np.arange(6, 14)] = True            # disjoint columns: sigma_1 = sigma_2
    m[:20, 14:60] = False                                   # half the rows empty
    w = np.abs(rng.standard_normal(m.shape))
    w[m & (rng.random(m.shape) < 0.05)] = 0.0               # kept zero weights
    x = np.where(m, w, 0.0)
    mm = sp.csc_array(m.astype(float))
    xx = sp.csc_array(x)
    xx.eliminate_zeros()
    x_on_m = w[mm.indices, np.repeat(np.arange(m.shape[1]), np.diff(mm.indptr))]
    blocks = [(0, 6), (6, 8), (14, 46), (60, 1), (61, 30), (91, 120), (211, 49)]
    want = [True, True, True, False, True, True, False]
    if per_entry == "mixed":  # the full route only for blocks of more than 40 entries
        monkeypatch.setattr(batched, "_full_height_pays",
                            lambda n_rows, counts, nnz, weighted: np.asarray(nnz) > 40)
    else:
        monkeypatch.setattr(batched, "_PER_ENTRY", per_entry)
    got_b, got_w = column_block_values(mm, xx, x_on_m, blocks, 2, want_weighted=want,
                                       max_side=64)
    for n, (start, count) in enumerate(blocks):
        _close(got_b[n], dense_top_singular_values(m[:, start:start + count].astype(float), 2))
        if want[n]:
            _close(got_w[n], dense_top_singular_values(x[:, start:start + count], 2))
        else:
            assert got_w[n].tolist() == [0.0, 0.0]

def _per_subgraph(lay, scored, s, w, name, dense_max):
    """The K_d loop before batched.py: one singular_values_compact call per subgraph."""
    n_l = len(lay.degrees)
    sig, wsig = [], []
    for d, start, n_d, _, _, _, fs in scored:
        whole = n_d == n_l
        sig.append((s.sigma_1, s.sigma_2) if whole and s is not None
                   else layer._sv2(lay.m[:, start:start + n_d], True, name, dense_max))
        ws = None
        if fs and lay.x is not None:
            ws = ((w.sigma_1, w.sigma_2) if whole and w is not None
                  else layer._sv2(lay.x[:, start:start + n_d], False, name, dense_max))
        wsig.append(ws)
    return sig, wsig


FIELDS = [f for f in layer.LayerSpectrum.__dataclass_fields__
          if f not in ("layer", "reasons", "coordinate")]


def _rows_equal(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if x is None or y is None:
            assert x is y, f
        else:
            assert abs(x - y) <= 1e-12 * max(abs(x), abs(y)) + 1e-13, (f, x, y)
    assert a.reasons == b.reasons
    if a.coordinate is not None:
        np.testing.assert_allclose(a.coordinate, b.coordinate, rtol=1e-12, atol=1e-13)


def _both_paths(monkeypatch, b, x, profile, quantities):
    new = layer_spectrum(b, x, profile=profile, quantities=quantities)
    with monkeypatch.context() as patch:
        patch.setattr(layer, "_group_values", _per_subgraph)
        old = layer_spectrum(b, x, profile=profile, quantities=quantities)
    _rows_equal(new, old)
    return new


@pytest.mark.parametrize("quantities", ["all", "fs"])
@pytest.mark.parametrize("shape, density", [((300, 64), 0.01), ((600, 128), 0.02),
                                            ((576, 64), 0.1), ((90, 40), 0.4),
                                            ((1152, 256), 0.012), ((200, 30), 1.0)])
def test_layer_rows_equal_the_per_subgraph_path(monkeypatch, quantities, shape, density):
    rng = np.random.default_rng([shape[0], int(density * 1000)])
    b = (rng.random(shape) < density).astype(float)
    x = np.abs(rng.standard_normal(shape)) * b
    if b.any():
        i, j = np.argwhere(b)[0]
        x[i, j] = 0.0  # a kept zero weight
    for profile in ("iclr23", "neurips23"):
        row = _both_paths(monkeypatch, b, x, profile, quantities)
        _both_paths(monkeypatch, b, None, profile, quantities)
        if b.size > 40000:  # the dense oracle is slow there; the path comparison stands
            continue
        ref = naive_layer_spectrum(b, x, profile=profile)  # dense numpy SVD
        for key in ("imdb_r", "imdb_lambda") + (("imdb",) if quantities == "all" else ()):
            if ref[key] is None:
                assert getattr(row, key) is None, key
            else:
                assert getattr(row, key) == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key


def test_layer_rows_with_rank_deficient_groups(monkeypatch):
    rng = np.random.default_rng(5)
    rows = rng.random((3, 40)) < 0.5
    b = rows[rng.integers(0, 3, 200)].astype(float)  # rank <= 3: every K_d is rank-deficient
    x = np.abs(rng.standard_normal(b.shape)) * b
    for quantities in ("all", "fs"):
        _both_paths(monkeypatch, b, x, "neurips23", quantities)
    _both_paths(monkeypatch, np.zeros((20, 10)), np.zeros((20, 10)), "iclr23", "all")


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 400), st.integers(1, 80),
       st.sampled_from([0.005, 0.02, 0.06, 0.3, 1.0]), st.sampled_from(["all", "fs"]))
def test_layer_rows_random(seed, n_in, n_out, density, quantities):
    rng = np.random.default_rng(seed)
    b = (rng.random((n_in, n_out)) < density).astype(float)
    x = np.abs(rng.standard_normal((n_in, n_out))) * b
    new = layer_spectrum(b, x, profile="neurips23", quantities=quantities)
    original = layer._group_values
    try:
        layer._group_values = _per_subgraph
        old = layer_spectrum(b, x, profile="neurips23", quantities=quantities)
    finally:
        layer._group_values = original
    _rows_equal(new, old)


def test_pad_sizes():
    assert [batched._pad(n) for n in (1, 5, 8, 9, 10, 11, 17, 33, 100, 129)] == \
        [1, 5, 8, 10, 10, 12, 20, 40, 112, 160]


def test_stacks_split_by_memory(monkeypatch):
    # a stack above _STACK_MEMORY bytes is split (here: one matrix per stack): same values
    rng = np.random.default_rng(9)
    mats = _zoo(rng)[:40]
    m = (rng.random((60, 200)) < 0.3)
    x = np.where(m, rng.random(m.shape), 0.0)
    blocks = [(0, 5), (5, 7), (12, 30), (42, 9), (51, 9)]
    before = singular_values_many(mats, 2)
    dense_before = column_block_values(m.astype(np.float32), x, None, blocks, 2)
    monkeypatch.setattr(batched, "_STACK_MEMORY", 1)
    np.testing.assert_allclose(singular_values_many(mats, 2), before, rtol=1e-13, atol=1e-13)
    for got, ref in zip(column_block_values(m.astype(np.float32), x, None, blocks, 2),
                        dense_before):
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape, density", [((1152, 256), 0.012), ((2000, 400), 0.01)])
def test_many_large_groups_of_a_sparse_layer_go_one_by_one(monkeypatch, shape, density):
    """Above layer._BATCH_LARGE_EDGES, a sparse layer's large K_d are solved one by one on their
    slices (the batch's bookkeeping costs more there); same numbers as the batched route, and
    only the small K_d reach the batch."""
    rng = np.random.default_rng([shape[0], 7])
    b = (rng.random(shape) < density).astype(float)
    x = np.abs(rng.standard_normal(shape)) * b
    sizes = []
    real = layer.column_block_values

    def spy(m, x_, x_on_m, blocks, *args, **kwargs):
        sizes.extend(min(count, m.shape[0]) for _, count in blocks)
        return real(m, x_, x_on_m, blocks, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(layer, "column_block_values", spy)
        batched_row = layer_spectrum(b, x, profile="neurips23")
    assert not all(batched.batchable(s) for s in sizes)  # large K_d batched by default
    sizes.clear()
    with monkeypatch.context() as patch:
        patch.setattr(layer, "_BATCH_LARGE_EDGES", 0)
        patch.setattr(layer, "column_block_values", spy)
        one_by_one = layer_spectrum(b, x, profile="neurips23")
    _rows_equal(one_by_one, batched_row)
    assert all(batched.batchable(s) for s in sizes)


def test_single_solves_in_two_threads_give_the_serial_numbers(monkeypatch, pool_sizes):
    """A big layer's K_d solved one by one run in two threads above layer._PARALLEL_EDGES (0
    here: always); same numbers as one thread, and the dense SVD's IMDB."""
    rng = np.random.default_rng(23)
    b = np.zeros((700, 300))  # fan-in degrees 80, 81 or 82: three K_d of ~230 positions, solved
    for i, d in enumerate(rng.integers(80, 83, 700)):  # one by one (a dense layer's large K_d)
        b[i, rng.choice(300, d, replace=False)] = 1.0
    x = np.abs(rng.standard_normal(b.shape)) * b
    serial = layer_spectrum(b, x, profile="neurips23")
    monkeypatch.setattr(layer, "_PARALLEL_EDGES", 0)
    threads = pool_sizes(layer)
    threaded = layer_spectrum(b, x, profile="neurips23")
    assert threads == [2]
    _rows_equal(threaded, serial)
    ref = naive_layer_spectrum(b, x, profile="neurips23")  # dense numpy SVD
    for key in ("imdb", "imdb_r", "imdb_lambda"):
        assert getattr(threaded, key) == pytest.approx(ref[key], rel=1e-9), key


def test_batched_lanczos_only_when_the_savings_pay_its_overhead():
    # the cost model's own terms, by hand: each problem's Gram cost minus its Lanczos work
    m, s, nnz = 1300.0, 400.0, 2000.0
    steps = min(s, batched._BATCH_STEPS)
    lanczos = steps * 2 * batched._KRYLOV_PER_NNZ * nnz + (batched._LANCZOS_PER_ORTH * s
                                                            * steps * steps / 2)
    gram = (min(batched._SPARSE_GRAM_PER_TERM * nnz * nnz / m,
                batched._BLAS_PER_MS2[True] * m * s * s) + batched._EIG_PER_S3 * s ** 3)
    saving = gram - lanczos
    assert saving > 0
    overhead = batched._BATCH_PER_STEP * batched._BATCH_STEPS
    few = int(overhead // saving)  # together they save no more than the overhead
    assert few >= 1
    many = few + 1
    pays = batched._lanczos_pays
    assert not pays([m] * few, [s] * few, [nnz] * few, [True] * few).any()
    assert pays([m] * many, [s] * many, [nnz] * many, [True] * many).all()
    # a problem whose Gram solve is cheaper never joins, however many others pay
    tiny = [m] * many + [300.0], [s] * many + [20.0], [nnz] * many + [60.0], [True] * (many + 1)
    assert pays(*tiny).tolist() == [True] * many + [False]
    assert pays([], [], [], []).shape == (0,)


@pytest.mark.parametrize("side", [batched._SUBSET_ABOVE, batched._SUBSET_ABOVE + 32])
def test_top_eigenvalues_of_a_stack_match_numpy(side):
    # both routes (stacked eigvalsh, dsyevr one by one), zero-padded and rank-deficient Grams
    rng = np.random.default_rng(side)
    a = rng.random((5, 2 * side, side)) * (rng.random((5, 2 * side, side)) < 0.3)
    a[1, :, side // 2:] = 0.0       # zero-padded columns: zero eigenvalues
    a[2] = np.outer(rng.random(2 * side), rng.random(side))  # rank 1
    grams = np.matmul(a.transpose(0, 2, 1), a)
    got = batched._top_eigenvalues(grams, 3)
    ref = np.linalg.eigvalsh(grams)[:, ::-1][:, :3]
    assert np.allclose(got, ref, rtol=0, atol=1e-12 * ref[:, :1])
