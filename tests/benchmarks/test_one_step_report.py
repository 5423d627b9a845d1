"""The one-step report's store and verdicts (no training: synthetic pairs)."""
import argparse
import json

from benchmarks import one_step_report as report


def pair(recipe, one, best, direction="lower", metric="m"):
    def evaluation(rows):
        return {"floor": {metric: 0.0}, "directions": {metric: direction}, "count": 10, "reference_count": 10,
                "floor_count": 10, "rows": [{"steps": s, "metrics": {metric: v}, "network_ms": 0.1 * s}
                                            for s, v in rows.items()]}

    return {"recipe": recipe, "meanflow_steps": 10, "fm_steps": 15, "mf_step_ms": 3.0, "fm_step_ms": 2.0,
            "step_ratio": 1.5, "mf_train_seconds": 30, "fm_train_seconds": 30, "batch": 8,
            "backbone": {"name": "mlp", "params": {}}, "seconds": 60, "date": "2026-11-26",
            "meanflow": evaluation({1: one, 2: one}),
            "flow_matching": evaluation({1: 9 * best if direction == "lower" else best / 9, 8: best})}


def test_running_some_recipes_keeps_the_others(tmp_path):
    store = tmp_path / "results.json"
    report.update_store(store, [pair("toy2d", 0.2, 0.1), pair("mine", 0.3, 0.1)])
    everything = report.update_store(store, [pair("toy2d", 0.15, 0.1)])
    assert [p["recipe"] for p in everything] == ["toy2d", "mine"]  # PAIRS order, then the rest
    assert everything[0]["meanflow"]["rows"][0]["metrics"]["m"] == 0.15
    assert json.loads(store.read_text())["pairs"][1]["recipe"] == "mine"


def test_verdicts_follow_the_metric_direction(tmp_path):
    lower = "\n".join(report.pair_section(pair("a", 0.2, 0.1), tmp_path, "figures"))
    assert "one MeanFlow step is **behind** it by 0.1000 (100%)" in lower
    higher = "\n".join(report.pair_section(pair("b", 0.95, 0.9, "higher"), tmp_path, "figures"))
    assert "is at least as good as flow matching at 8 steps (0.9000)" in higher and "**behind**" not in higher
    behind = "\n".join(report.pair_section(pair("c", 0.8, 0.9, "higher"), tmp_path, "figures"))
    assert "one MeanFlow step is **behind** it by 0.1000 (11%)" in behind


def test_the_report_names_pairs_not_run_yet(tmp_path):
    args = argparse.Namespace(figures=tmp_path / "figures", out=tmp_path / "results.md", peers=tmp_path / "none")
    report.write_report([pair("toy2d", 0.2, 0.1)], args)
    text = args.out.read_text()
    assert "Not run yet: toy2d_guided" in text and "## toy2d" in text


def test_an_imported_pair_is_described_with_the_overrides_it_was_trained_with(tmp_path):
    fields = {"meanflow": {}, "flow_matching": {}, "meanflow_steps": 10, "fm_steps": 15, "mf_step_ms": 3.0,
              "fm_step_ms": 2.0}
    measured = tmp_path / "results.json"
    measured.write_text(json.dumps({"recipe": "recipes/toy2d.yaml", "overrides": ["train.batch_size=64"], **fields}))
    pair = report.imported_pair(measured, "python bench.py --set train.batch_size=64")
    assert pair["recipe"] == "toy2d" and pair["batch"] == 64 and pair["step_ratio"] == 1.5
    assert "overrides train.batch_size=64" in pair["note"]
    measured.write_text(json.dumps({"recipe": "recipes/toy2d.yaml", **fields}))
    assert report.imported_pair(measured, "python bench.py")["batch"] == 256  # the shipped recipe's
