import numpy as np
import pandas as pd
import pytest

from hyperlearn.pipeline.catalog import EntityCatalog
from hyperlearn.pipeline.graph_build import build_graphs
from hyperlearn.pipeline.spec import load_spec
from hyperlearn.rundir import RunDir


@pytest.fixture
def graph_spec(demo_document, write_spec, write, tmp_path):
    """build(user_modality, users_csv=None, pairs_csv=None, keys=..., device="cpu") → (stats, run): a spec whose
    user modality is `user_modality`, a run catalog holding `keys`, and the graphs built from them on `device`."""

    def build(
        user_modality: dict, users_csv: str | None = None, pairs_csv: str | None = None, keys="abcde", device="cpu"
    ):
        if users_csv is not None:
            write("users.csv", users_csv)
        if pairs_csv is not None:
            write("friends.csv", pairs_csv)
        demo_document["modalities"][0] = {"name": "user", **user_modality}
        spec = load_spec(write_spec(demo_document))
        run = RunDir(tmp_path / f"run-{device}")
        EntityCatalog("user", keys).save(run.catalog)
        EntityCatalog("item", ["i1"]).save(run.catalog)
        return build_graphs(spec, run, device=device), run

    return build


FEATURES = {"source": {"path": "users.csv"}, "key": "user_id", "numeric": ["x"], "categorical": ["kind"]}
PAIRS = {"source": {"path": "friends.csv"}, "columns": ["a", "b"], "weight": "w"}


def _edges(run, modality="user") -> set[tuple[int, int]]:
    laplacian = run.read_laplacian(modality).tocoo()
    return {(int(i), int(j)) for i, j, v in zip(laplacian.row, laplacian.col, laplacian.data) if i < j and v != 0}


def _quarantine(run, modality="user") -> list[list]:
    frame = pd.read_parquet(run.graph_quarantine(modality))
    return frame[["row_number", "field", "reason"]].values.tolist()


def test_knn_over_features_leaves_entities_without_features_isolated(graph_spec):
    users = "user_id,x,kind\na,0,p\nb,1,p\nc,10,q\nd,11,q\n"
    stats, run = graph_spec({"features": FEATURES, "graph": {"knn": {"k": 1}}}, users_csv=users)

    assert _edges(run) == {(0, 1), (2, 3)}
    laplacian = run.read_laplacian("user")
    assert laplacian.shape == (5, 5)
    np.testing.assert_allclose(laplacian.toarray(), laplacian.toarray().T)
    assert laplacian[4].nnz == 0  # e has no features: an isolated node
    user = stats["user"]
    assert (user.nodes, user.edges, user.isolated, user.knn_edges, user.pair_edges) == (5, 2, 1, 2, 0)
    assert user.sources == ("knn",) and user.rows_read == 4 and user.rows_quarantined == 0
    assert user.to_dict()["sources"] == ["knn"]
    assert _quarantine(run) == []
    assert "item" not in stats and not run.graph("item").exists()


def test_features_are_standardised_and_one_hot(graph_spec):
    # Raw, a and c (x 0.02 apart, same kind) would be nearest neighbours. Standardised, x puts them 2.45 apart,
    # farther than b is from either (1.87: 1.22 in x, sqrt(2) for the other kind's one-hot).
    users = "user_id,x,kind\na,0,p\nb,0.01,q\nc,0.02,p\n"
    _, run = graph_spec({"features": FEATURES, "graph": {"knn": {"k": 1}}}, users_csv=users, keys=("a", "b", "c"))
    assert _edges(run) == {(0, 1), (1, 2)}


def test_raw_features_when_standardise_is_false(graph_spec):
    users = "user_id,x,kind\na,0,p\nb,0.01,q\nc,0.02,p\n"
    raw = {**FEATURES, "standardise": False}
    _, run = graph_spec({"features": raw, "graph": {"knn": {"k": 1}}}, users_csv=users, keys=("a", "b", "c"))
    assert _edges(run) == {(0, 1), (0, 2)}  # a–c: 0.02 apart, same kind; b ties between a and c, a wins


def test_bad_feature_rows_are_quarantined(graph_spec):
    users = "user_id,x,kind\na,0,p\nzz,1,p\nb,old,p\na,5,q\n,3,p\nc,4,\nd,2,p,extra\n"
    stats, run = graph_spec({"features": FEATURES, "graph": {"knn": {"k": 1}}}, users_csv=users)

    assert _quarantine(run) == [
        [2, "user_id", "key not in any relation"],
        [3, "x", "not a number: 'old'"],
        [4, "user_id", "duplicate key; row 1 has it already"],
        [5, "user_id", "empty key"],
        [7, "(row)", "expected 3 fields, got 4"],
    ]
    assert stats["user"].rows_read == 7 and stats["user"].rows_quarantined == 5
    assert _edges(run) == {(0, 2)}  # a and c (missing category: all zeros) remain; b, d, e isolated
    assert stats["user"].isolated == 3


def test_given_pairs_keep_their_largest_weight(graph_spec):
    pairs = "a,b,w\na,b,1\nb,a,3\nc,d,0.5\nd,zz,1\nc,c,1\na,c,-1\na,d,heavy\n"
    stats, run = graph_spec({"graph": {"pairs": PAIRS}}, pairs_csv=pairs)

    assert _quarantine(run) == [
        [4, "b", "key not in any relation"],
        [5, "b", "a pair of an entity with itself"],
        [6, "w", "weight must be > 0, got -1"],
        [7, "w", "not a number: 'heavy'"],
    ]
    laplacian = run.read_laplacian("user").toarray()
    # a–b keeps weight 3 (its only edge), so L[a, b] = -3 / sqrt(3 * 3) = -1
    assert laplacian[0, 1] == pytest.approx(-1.0) and laplacian[2, 3] == pytest.approx(-1.0)
    user = stats["user"]
    assert (user.edges, user.pair_edges, user.knn_edges, user.isolated, user.sources) == (2, 2, 0, 1, ("pairs",))


def test_union_of_knn_and_pairs(graph_spec):
    users = "user_id,x,kind\na,0,p\nb,1,p\nc,10,p\nd,11,p\n"
    pairs = "a,b,w\na,b,1\nb,c,1\n"
    stats, run = graph_spec(
        {"features": FEATURES, "graph": {"knn": {"k": 1}, "pairs": PAIRS}}, users_csv=users, pairs_csv=pairs
    )
    assert _edges(run) == {(0, 1), (2, 3), (1, 2)}
    assert (stats["user"].knn_edges, stats["user"].pair_edges, stats["user"].edges) == (2, 2, 3)
    assert stats["user"].sources == ("knn", "pairs")


def test_graphs_need_the_run_catalog(demo_document, write_spec, tmp_path):
    spec = load_spec(write_spec(demo_document))
    with pytest.raises(FileNotFoundError, match=r"catalog/user\.parquet: no catalog for modality 'user'; run ingest"):
        build_graphs(spec, RunDir(tmp_path / "run"))


@pytest.mark.parametrize(("numeric", "categorical"), [(["x"], []), ([], ["kind"])])
def test_features_of_one_kind_only(graph_spec, numeric, categorical):
    users = "user_id,x,kind\na,0,p\nb,1,p\nc,10,q\nd,11,q\n"
    features = FEATURES | {"numeric": numeric, "categorical": categorical}
    stats, run = graph_spec({"features": features, "graph": {"knn": {"k": 1}}}, users_csv=users)
    assert _edges(run) == {(0, 1), (2, 3)}
    assert stats["user"].isolated == 1


def test_an_unresolved_device_is_refused(graph_spec):
    with pytest.raises(ValueError, match="resolved"):
        graph_spec({"graph": {"pairs": PAIRS}}, pairs_csv="a,b,w\na,b,1\n", device="auto")


@pytest.mark.gpu
def test_graphs_built_on_the_gpu_are_the_cpus(graph_spec):
    pytest.importorskip("cupy")
    rng = np.random.default_rng(8)
    keys = [f"u{i}" for i in range(300)]
    users = "user_id,x,kind\n" + "".join(
        f"{key},{rng.integers(0, 4)},{'pq'[rng.integers(0, 2)]}\n" for key in keys  # integers: many ties
    )
    pairs = "a,b,w\n" + "".join(f"u{i},u{i + 7},{rng.random() + 0.5}\n" for i in range(0, 280, 3))
    modality = {"features": FEATURES, "graph": {"knn": {"k": 5}, "pairs": PAIRS}}
    built = {
        device: graph_spec(modality, users_csv=users, pairs_csv=pairs, keys=keys, device=device)
        for device in ("cpu", "cuda")
    }
    (cpu_stats, cpu_run), (gpu_stats, gpu_run) = built["cpu"], built["cuda"]
    assert gpu_stats == cpu_stats
    on_cpu, on_gpu = cpu_run.read_laplacian("user"), gpu_run.read_laplacian("user")
    np.testing.assert_array_equal(on_gpu.indices, on_cpu.indices)
    np.testing.assert_allclose(on_gpu.toarray(), on_cpu.toarray(), rtol=1e-13, atol=0)
