"""The geometry benchmark core runs end to end on a tiny size."""

from __future__ import annotations

from manifolds import benchmark


def test_benchmark_report_and_demo(capsys):
    report = benchmark.run(n=512, d=8, repeats=1, warmup=1, min_sample_s=0.0)
    assert set(report["results"]) == {"expmap0", "logmap0", "dist", "mobius_matvec"}
    for entry in report["results"].values():
        for mode, r in entry.items():
            assert mode in ("forward", "forward_backward")
            assert r["geometry_s"] > 0 and r["euclidean_s"] > 0
            assert abs(r["ratio"] - r["geometry_s"] / r["euclidean_s"]) < 1e-12
    assert report["machine"]["jax"] and report["machine"]["cpu_count"]
    table = benchmark.format_table(report)
    assert "mobius_matvec" in table and "forward_backward" in table
