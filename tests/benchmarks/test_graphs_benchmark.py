import json

from benchmarks import graphs


def test_the_benchmark_times_every_method_and_checks_the_graphs_agree(tmp_path):
    assert graphs.main(["--sizes", "60", "--dims", "3", "--repeats", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    [row] = results["rows"]
    assert row["blocks_same_as_kd_tree"] and row["edges"] > 0
    assert row["knn_kd_tree_cpu_s"] > 0 and row["knn_blocks_cpu_s"] > 0 and row["laplacian_cpu_s"] > 0
    table = (tmp_path / "results.md").read_text()
    if results["machine"]["gpu"] is None:  # no GPU: empty GPU columns, and the reason kept
        assert "knn_blocks_gpu_s" not in row and results["machine"]["no_gpu_reason"]
        assert "GPU: none found here" in table
    else:
        assert row["gpu_same_graph"] and row["knn_blocks_gpu_s"] > 0
