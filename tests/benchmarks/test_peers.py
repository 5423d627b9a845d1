"""The peer benchmark's method names and its results store (no training, no peer libraries needed)."""
import argparse
import json

import pytest

import mfkit
from benchmarks import peers


def test_variant_names_build_the_options_they_name():
    built = peers.build_method("mfkit-mf-toy+ot+imf+alpha+share=0.75+p=1").objective
    assert built.coupling == "ot" and built.formulation == "imf" and built.alpha == mfkit.AlphaCurriculum()
    assert built.times.r_neq_t_share == 0.75 and built.adaptive_p == 1.0
    v1 = peers.build_method("mfkit-mf-toy+v1+mean=-0.6+std=1.6").objective.times
    assert v1 == mfkit.TimePairSampler(mfkit.LogitNormal(-0.6, 1.6), mfkit.LogitNormal(-4.0, 1.6), 0.5, order="clip")
    assert peers.build_method("mfkit-mf-small").objective == mfkit.MeanFlow.preset("small")
    assert peers.build_method("mfkit-mf-small+block=64").objective == mfkit.MeanFlow.preset("small", coupling_block=64)
    assert peers.build_method("mfkit-mf-toy").objective == peers.build_method("mfkit-mf-toy+share=0.5").objective
    assert peers.build_method("mfkit-mf-toy").objective.interval_weighting is None
    assert peers.build_method("mfkit-mf-toy+ot+iw").objective.interval_weighting == mfkit.IntervalWeighting()
    assert peers.build_method("mfkit-mf-toy+iw=2").objective.interval_weighting == mfkit.IntervalWeighting(strength=2.0)
    fm = peers.build_method("mfkit-fm+ot+block=64").objective
    assert isinstance(fm, mfkit.FlowMatching) and fm.coupling == "ot" and fm.coupling_block == 64
    assert peers.label("mfkit-fm+ot") == "mfkit flow matching + ot"
    with pytest.raises(ValueError, match="unknown option"):
        peers.build_method("mfkit-mf-toy+sinkhorn")


def _args(methods, steps=1500):
    return argparse.Namespace(data="checkerboard", methods=methods, steps=steps, batch=256, width=256, depth=4,
                              lr=1e-3, ema=0.995, n=4000, seed=0, threads=1, timing_steps=20, timing_rounds=3)


def _result(method, value):
    return {"method": method, "label": method, "data": "checkerboard", "rows": [{"calls": 1, "metrics": {"w": value}}]}


def test_a_run_of_new_methods_adds_rows_to_a_comparable_table(tmp_path):
    store = tmp_path / "peers.json"
    peers.write_json(store, [_result("a", 1.0), _result("b", 2.0)], "here", _args("a,b"))
    peers.write_json(store, [_result("b", 3.0), _result("c", 4.0)], "there", _args("b,c"))
    stored = json.loads(store.read_text())
    assert {r["method"]: r["rows"][0]["metrics"]["w"] for r in stored["results"]} == {"a": 1.0, "b": 3.0, "c": 4.0}
    assert stored["runs"]["checkerboard"]["settings"]["methods"] == "a,b,c"
    peers.write_json(store, [_result("c", 5.0)], "there", _args("c", steps=10))  # other settings: a new table
    assert [r["method"] for r in json.loads(store.read_text())["results"]] == ["c"]
