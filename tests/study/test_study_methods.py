"""Study methods: SNIP/GraSP get prune batches from the sweep's --data, RPI takes a ranking
method's per-layer counts, and a method registered by any module joins a sweep unedited."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from graphpai.cli import main  # noqa: E402
from graphpai.errors import StudyError  # noqa: E402
from graphpai.functional import audit  # noqa: E402
from graphpai.generators import GENERATORS, register  # noqa: E402
from graphpai.generators.ranking import magnitude  # noqa: E402
from graphpai.prune import prune  # noqa: E402
from graphpai.study import grid, read_table  # noqa: E402
from graphpai.study.measure import measure  # noqa: E402
from graphpai.torch.data import load_data  # noqa: E402
from graphpai.torch.extract import to_graph  # noqa: E402
from graphpai.torch.models import build  # noqa: E402


def test_data_hungry_methods_need_data():
    with pytest.raises(StudyError, match="snip needs prune batches: give the sweep --data"):
        grid(model="lenet5", methods="snip", compressions="1e2")
    with pytest.raises(StudyError, match="grasp needs prune batches"):
        grid(model="lenet5", methods="rpi", budgets="grasp", compressions="1e2")
    with pytest.raises(StudyError, match="snip needs prune batches"):  # PAGS on a SNIP base
        grid(model="lenet5", methods="pags", compressions="1e2", options={"pags.base": "snip"})


def test_pags_on_a_snip_base_gets_the_prune_batches():
    """The sweep hands PAGS's base method the same batches ``prune(..., data=)`` gets by hand."""
    seed, options = 2, {"base": "snip", "population": 2}
    (point,) = grid(model="lenet5", methods="pags", compressions="1e1", seeds=str(seed),
                    options={f"pags.{k}": v for k, v in options.items()},
                    settings={"data": "synthetic"})
    row = measure(point)
    batches = load_data("synthetic", num_classes=10, input_shape=(1, 28, 28)).train \
        .prune_batches(seed=seed)
    masks = prune(build("lenet5", seed=seed), "pags", compression=10, seed=seed, data=batches,
                  **options)
    assert row["kept"] == masks.kept()


def test_sweep_without_data_for_snip_is_one_line(tmp_path, capsys):
    out = tmp_path / "study"
    for extra in ([], ["--data", str(tmp_path / "missing")]):
        assert main(["sweep", "--model", "lenet5", "--methods", "snip", "--compressions", "1e2",
                     "--out", str(out), "--quiet", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("graphpai: error:")
        assert "--data" in err
        assert not out.exists()


@pytest.mark.parametrize("method, budget", [("snip", None), ("grasp", None), ("rpi", "snip")])
def test_prune_batches_are_the_training_split_of_the_data(method, budget):
    """The row equals a mask made by hand: the seed's initial weights, 10 x classes images of
    the synthetic training split drawn with the point's seed."""
    seed = 3
    (point,) = [p for p in grid(model="lenet5", methods=method, budgets=budget or "erk",
                                compressions="1e2", seeds=str(seed),
                                settings={"data": "synthetic"})]
    row = measure(point)
    model = build("lenet5", seed=seed)
    batches = load_data("synthetic", num_classes=10, input_shape=(1, 28, 28)).train \
        .prune_batches(seed=seed)
    assert sum(len(y) for _, y in batches) == 100
    masks = prune(model, method, budget=budget, compression=100, seed=seed, data=batches)
    expected = audit(to_graph(model), masks, semantics="channel")
    assert (row["kept"], row["channel_functional"]) == (masks.kept(), expected.functional)


def test_rpi_with_a_data_free_ranking_budget():
    (point,) = grid(model="lenet5", methods="rpi", budgets="synflow", compressions="1e2")
    row = measure(point)
    counts = prune(build("lenet5", seed=0), "synflow", compression=100, seed=0)
    assert row["kept"] == counts.kept()


@pytest.fixture
def registered():
    """Two methods registered the way other modules do (a placement and a data-hungry
    ranking); removed afterwards."""
    seen = {}

    @register("b2-placement")
    def b2_placement(graph, budget, *, seed=None):
        return prune(graph, "rpi", budget=budget, seed=seed)

    @register("b2-ranking", kind="ranking", needs_data=True)
    def b2_ranking(model, compression, *, seed=None, data=None, input_shape=None):
        seen["images"] = sum(len(y) for _, y in data)
        return magnitude(model, compression, seed=seed)

    yield seen
    for name in ("b2-placement", "b2-ranking"):
        GENERATORS.pop(name, None)


def test_a_newly_registered_method_joins_a_study(registered, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from graphpai.study import Store, study_definition
    from graphpai.study.runner import run

    points = grid(model="lenet5", methods="b2-placement,b2-ranking,rpi", budgets="erk",
                  compressions="1e1,1e2", settings={"data": "synthetic"})
    assert [(p.method, p.budget) for p in points[::2]] == [
        ("b2-placement", "erk"), ("b2-ranking", None), ("rpi", "erk")]
    with Store(tmp_path, study_definition(points)) as store, ThreadPoolExecutor(1) as pool:
        summary = run(points, measure, store, executor=pool, progress=False)
    assert summary.failed == () and summary.done == 6
    rows = {(r["method"], r["compression"]): r for r in read_table(tmp_path)}
    assert registered["images"] == 100
    # the new placement is RPI under another name: the same masks, the same rows
    for c in (10.0, 100.0):
        assert rows[("b2-placement", c)]["channel_functional"] == rows[("rpi", c)][
            "channel_functional"]
    model = build("lenet5", seed=0)
    assert rows[("b2-ranking", 100.0)]["kept"] == magnitude(model, 100, seed=0).kept()


def test_options_scoped_to_one_method():
    from graphpai.errors import UnknownMethodError
    from graphpai.study.grid import method_options

    opts = {"mica.node_selection": "min", "synflow.iterations": 5}
    points = grid(model="lenet5", methods="mica,synflow", compressions="1e2", options=opts)
    assert [p.option_dict for p in points] == [opts, opts]  # the key covers every option
    mica_row, synflow_row = (measure(p) for p in points)
    graph = to_graph(build("lenet5", seed=0))
    by_hand = prune(graph, "mica", budget="erk", compression=100, seed=0, node_selection="min")
    assert mica_row["channel_functional"] == audit(graph, by_hand).functional
    assert synflow_row["kept"] == prune(build("lenet5", seed=0), "synflow", compression=100,
                                        seed=0, iterations=5).kept()
    assert method_options(opts, "rpi") == {}
    with pytest.raises(UnknownMethodError, match="takes no option 'node_selection'"):
        grid(model="lenet5", methods="mica,synflow", compressions="1e2",
             options={"node_selection": "min"})
    with pytest.raises(StudyError, match="option 'nm.n' is for method 'nm', which this study"):
        grid(model="lenet5", methods="mica", compressions="1e2", options={"nm.n": 2})


def _index_after_a_nap(_):
    import time

    from graphpai.study.runner import worker_index

    time.sleep(0.5)  # long enough for the second worker to start and take tasks
    return worker_index()


def test_each_pool_worker_has_its_own_index_and_gpu(monkeypatch):
    from graphpai.study import runner

    with runner.process_pool(2) as pool:
        seen = set(pool.map(_index_after_a_nap, range(8)))
    assert seen == {0, 1}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    devices = []
    for index in range(6):
        monkeypatch.setitem(runner._WORKER, "index", index)
        devices.append(runner.worker_device("auto"))
    assert devices == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert runner.worker_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runner.worker_device("auto") == "auto"  # one GPU: train picks it
