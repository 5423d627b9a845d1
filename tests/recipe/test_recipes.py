"""Recipes: every shipped one validates; errors come all at once with field paths; overrides work."""
import pytest
import yaml

import mfkit
from mfkit.cli.recipes import shipped_recipes
from mfkit.recipe import RecipeError, apply_overrides, load_recipe, parse_recipe, recipe_to_yaml
from mfkit.plugins import ClassCondition
from mfkit.recipe.build import build_modality, build_objective
from tests.helpers import small_recipe, write_recipe


def test_there_are_shipped_recipes():
    assert any(name == "toy2d" for name, _, _ in shipped_recipes())


@pytest.mark.parametrize("name, path", [(n, p) for n, p, _ in shipped_recipes()])
def test_every_shipped_recipe_validates_and_states_its_hardware(name, path):
    recipe = load_recipe(path)
    try:
        modality = build_modality(recipe)
        condition, set_axis = modality.condition(), getattr(modality, "set_axis", None)
    except Exception as error:  # a template for the user's own data folder, absent here
        if "does not exist" not in str(error):
            raise
        condition, set_axis = ClassCondition(["a", "b"]), None  # its classes come from the user's sub-folders
    build_objective(recipe.objective, condition, recipe.modality.name, set_axis)
    assert any(line.lower().startswith("# expects:") for line in path.read_text().splitlines()), \
        f"{path} needs a header comment 'Expects: <hardware>, <time>'"


def test_all_errors_are_reported_at_once_with_paths(tmp_path):
    data = small_recipe(tmp_path)
    data["objective"] = {"adaptive_p": "abc", "r_neq_t_share": 2, "typo_field": 1}
    data["train"]["steps"] = 0
    data["modality"]["params"]["distribution"] = "moon"
    data["backbone"]["name"] = "mlpp"
    with pytest.raises(RecipeError) as caught:
        parse_recipe(data)
    problems = caught.value.problems
    assert "objective.adaptive_p: Input should be a valid number, unable to parse string as a number" in problems
    assert any(p.startswith("objective.r_neq_t_share: Input should be less than or equal to 1") for p in problems)
    assert any(p.startswith("objective.typo_field: unknown field") for p in problems)
    assert any(p.startswith("train.steps: Input should be greater than 0") for p in problems)
    assert any(p.startswith("modality.params.distribution: Input should be 'checkerboard'") for p in problems)
    assert any("backbone.name: unknown backbone 'mlpp'. Did you mean 'mlp'?" in p for p in problems)
    assert len(problems) == 6


def test_plugin_parameters_are_validated_by_the_plugin(tmp_path):
    data = small_recipe(tmp_path)
    data["backbone"]["params"] = {"width": -3, "colour": "red"}
    with pytest.raises(RecipeError) as caught:
        parse_recipe(data)
    assert any(p.startswith("backbone.params.width: Input should be greater than 0") for p in caught.value.problems)
    assert any(p.startswith("backbone.params.colour: unknown parameter of backbone 'mlp'") and "Valid: width, depth"
               in p for p in caught.value.problems)


def test_no_recipe_can_name_arbitrary_code(tmp_path):
    data = small_recipe(tmp_path)
    data["backbone"]["name"] = "os:system"
    with pytest.raises(RecipeError, match="unknown backbone 'os:system'"):
        parse_recipe(data)
    data = small_recipe(tmp_path)
    data["modality"]["params"]["distribution"] = "!!python/object/apply:os.system ['echo hacked']"
    with pytest.raises(RecipeError):
        parse_recipe(data)
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)


def test_overrides_set_nested_values_with_yaml_types(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path))
    recipe = load_recipe(path, ["train.steps=7", "train.lr=3e-4", "objective.guidance=null",
                                "train.ema_decays=[0.9, 0.95]", "name=other", "modality.params.conditional=true"])
    assert recipe.train.steps == 7 and recipe.train.lr == 3e-4 and recipe.name == "other"
    assert recipe.train.ema_decays == [0.9, 0.95] and recipe.modality.params["conditional"] is True


@pytest.mark.parametrize("bad, message", [("train.steps", "key.path=value"), ("=3", "key.path=value"),
                                          ("train.steps.deep=1", "is a value, not a section")])
def test_bad_overrides_are_clear(tmp_path, bad, message):
    with pytest.raises(RecipeError, match=message):
        apply_overrides(small_recipe(tmp_path), [bad])


def test_overrides_to_unknown_fields_fail_validation(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path))
    with pytest.raises(RecipeError, match="train.stpes: unknown field"):
        load_recipe(path, ["train.stpes=3"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match="no recipe file"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(listy)


def test_resolved_recipe_round_trips(tmp_path):
    recipe = parse_recipe(small_recipe(tmp_path))
    again = parse_recipe(yaml.safe_load(recipe_to_yaml(recipe)))
    assert again == recipe


def test_objective_building_honours_presets_and_explicit_fields():
    from mfkit.recipe.schema import ObjectiveSettings

    cifar = build_objective(ObjectiveSettings(preset="cifar10"), None)
    assert cifar.adaptive_p == 0.75 and cifar.adaptive_c == 1e-3 and cifar.times.r_neq_t_share == 0.75
    assert cifar.times.r_dist == mfkit.LogitNormal(-4.0, 1.6)
    tuned = build_objective(ObjectiveSettings(preset="cifar10", adaptive_p=1.0), None)
    assert tuned.adaptive_p == 1.0 and tuned.adaptive_c == 1e-3
    plain = build_objective(ObjectiveSettings(r_neq_t_share=0.5, time_sampler={"kind": "uniform"}), None)
    assert plain.times.r_neq_t_share == 0.5 and plain.times.t_dist == mfkit.Uniform()
    assert plain.times.full_jump_share == 0.0
    jumps = build_objective(ObjectiveSettings(preset="small", full_jump_share=0.1), None)
    assert jumps.times.full_jump_share == 0.1 and jumps.times.r_neq_t_share == 0.5
    fm = build_objective(ObjectiveSettings(kind="flow_matching"), None)
    assert isinstance(fm, mfkit.FlowMatching) and fm.adaptive_p == 0.0
    guided = build_objective(ObjectiveSettings(guidance={"w_cfg": 0.2, "kappa": 0.92, "t_max": 0.75}), 8)
    assert guided.guidance.null_label == 8 and guided.guidance.t_max == 0.75
    with pytest.raises(RecipeError, match="objective.guidance: this modality offers no conditions"):
        build_objective(ObjectiveSettings(guidance={}), None)


def test_preset_brings_the_papers_optimisation_settings(tmp_path):
    data = small_recipe(tmp_path)
    data["objective"] = {"preset": "cifar10"}
    data["train"] = {"steps": 10, "lr": 1e-3}  # set explicitly: wins over the preset
    recipe = parse_recipe(data)
    train = recipe.train
    assert train.lr == 1e-3 and train.steps == 10
    assert train.batch_size == 1024 and train.betas == (0.9, 0.999) and train.grad_clip is None
    assert train.ema_decays == [0.9999, 0.99995, 0.9996] and train.optimizer == "adam"
    imagenet = parse_recipe({**data, "objective": {"preset": "imagenet"}, "train": {}})
    assert imagenet.train.lr == 1e-4 and imagenet.train.betas == (0.9, 0.95) and imagenet.train.batch_size == 256


@pytest.mark.parametrize("objective", [{"preset": "cifar10"}, {"preset": "imagenet", "adaptive_p": 0.5},
                                       {"kind": "flow_matching"}, {"kind": "flow_matching", "preset": "cifar10"},
                                       {"coupling": "ot", "formulation": "imf",
                                        "alpha_curriculum": {"flow_matching_until": 0.1, "shape": "linear"},
                                        "interval_weighting": {"strength": 3.0}},
                                       {"kind": "flow_matching", "coupling": "ot"}, {"preset": "small"},
                                       {"kind": "flow_matching", "preset": "small"}])
def test_resolved_recipe_rebuilds_the_same_objective(tmp_path, objective):
    recipe = parse_recipe({**small_recipe(tmp_path), "objective": objective})
    again = parse_recipe(yaml.safe_load(recipe_to_yaml(recipe)))
    assert build_objective(again.objective, None) == build_objective(recipe.objective, None)


def test_small_preset_is_the_same_from_the_recipe_and_the_code(tmp_path):
    from mfkit.recipe.schema import ObjectiveSettings

    assert build_objective(ObjectiveSettings(preset="small"), None) == mfkit.MeanFlow.preset("small")
    fm = build_objective(ObjectiveSettings(kind="flow_matching", preset="small"), None)
    assert fm.coupling == "ot" and fm.coupling_block == 64 and fm.adaptive_p == 0.5  # OT-CFM, same pairs
    data = small_recipe(tmp_path)
    recipe = parse_recipe({**data, "objective": {"preset": "small"}, "train": {"steps": 10}})
    assert recipe.train.batch_size == 256 and recipe.train.lr_schedule == "cosine" and recipe.train.lr == 1e-3


def test_cifar10_preset_objective_is_the_official_one():
    from mfkit.recipe.schema import ObjectiveSettings

    built = build_objective(ObjectiveSettings(preset="cifar10"), None)
    assert built.times == mfkit.cifar10_v1_sampler() and built == mfkit.MeanFlow.preset("cifar10")
    fm = build_objective(ObjectiveSettings(kind="flow_matching", preset="cifar10"), None)
    assert fm.adaptive_p == 0.75 and fm.times.t_dist == mfkit.LogitNormal(-0.6, 1.6)


def test_objective_variants_build_from_the_recipe():
    from mfkit.recipe.schema import ObjectiveSettings

    built = build_objective(ObjectiveSettings(coupling="ot", coupling_block=128, formulation="imf",
                                              alpha_curriculum={"meanflow_from": 0.5}), None)
    assert built.coupling == "ot" and built.coupling_block == 128 and built.formulation == "imf"
    assert built.alpha == mfkit.AlphaCurriculum(0.25, 0.5, "cosine")
    assert build_objective(ObjectiveSettings(kind="flow_matching", coupling="ot"), None).coupling == "ot"
    with pytest.raises(ValueError, match="coupling_block"):
        ObjectiveSettings(coupling="ot", coupling_block=1)
    with pytest.raises(ValueError, match="must not exceed meanflow_from"):
        ObjectiveSettings(alpha_curriculum={"flow_matching_until": 0.9, "meanflow_from": 0.5})
    weighted = build_objective(ObjectiveSettings(interval_weighting={"strength": 2.0, "shape": "linear"}), None)
    assert weighted.interval_weighting == mfkit.IntervalWeighting(2.0, 0.5, "linear")
    assert build_objective(ObjectiveSettings(), None).interval_weighting is None
    for bad in ({"strength": -1.0}, {"balanced_from": 0.0}, {"strength": float("nan")}, {"strength": 1e4}):
        with pytest.raises(ValueError, match="interval_weighting"):
            ObjectiveSettings(interval_weighting=bad)
    with pytest.raises(ValueError, match="kind flow_matching computes no JVP.*interval_weighting"):
        ObjectiveSettings(kind="flow_matching", interval_weighting={})


def test_set_coupling_takes_the_set_axis_from_the_modality():
    from mfkit.recipe.schema import ObjectiveSettings

    built = build_objective(ObjectiveSettings(set_coupling="ot"), None, "points", set_axis=0)
    assert built.set_coupling == "ot" and built.set_axis == 0
    fm = build_objective(ObjectiveSettings(kind="flow_matching", set_coupling="ot"), None, "points", set_axis=0)
    assert fm.set_coupling == "ot" and fm.set_axis == 0
    assert build_objective(ObjectiveSettings(), None, "points", set_axis=0).set_axis is None  # unused
    with pytest.raises(RecipeError, match="does not declare its samples to be sets"):
        build_objective(ObjectiveSettings(set_coupling="ot"), None, "toy2d")


def test_a_set_coupling_recipe_on_a_modality_without_sets_is_refused_before_training(tmp_path):
    from mfkit.train.trainer import Trainer

    data = {**small_recipe(tmp_path), "objective": {"kind": "meanflow", "set_coupling": "ot"}}
    with pytest.raises(RecipeError, match="objective.set_coupling: modality 'toy2d'"):
        Trainer(parse_recipe(data)).fit()
    assert not (tmp_path / "runs" / "tiny").exists()  # no half-made run folder left behind


@pytest.mark.parametrize("field", ["jvp_backend: nograd", "r_neq_t_share: 0.5", "jvp_precision: autocast",
                                   "formulation: imf", "alpha_curriculum: {}", "full_jump_share: 0.1"])
def test_flow_matching_refuses_meanflow_only_fields(tmp_path, field):
    key, value = field.split(": ")
    data = small_recipe(tmp_path)
    data["objective"] = {"kind": "flow_matching", key: yaml.safe_load(value)}
    with pytest.raises(RecipeError, match=f"flow_matching computes no JVP.*{key}"):
        parse_recipe(data)


def test_precision_fields_say_what_stays_float32():
    from mfkit.recipe.schema import ObjectiveSettings, TrainSettings

    assert "float32" in ObjectiveSettings.model_fields["jvp_precision"].description
    assert "float32" in TrainSettings.model_fields["precision"].description
