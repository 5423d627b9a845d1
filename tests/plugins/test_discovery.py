"""Discovery through entry points: working plugins load, broken ones are reported, the rest keep working."""
import pytest

from mfkit.plugins import PLUGIN_API_VERSION, Registry, UnknownPluginError
from tests.helpers import write_distribution

GOOD = """
from mfkit.builtin.toy2d import SPEC as _TOY
from mfkit.plugins import ModalitySpec, BackboneSpec
from mfkit.builtin.mlp import SPEC as _MLP
import dataclasses
SPEC = dataclasses.replace(_TOY, name="good")
DUPLICATE = dataclasses.replace(_TOY)
NOT_A_SPEC = {"name": "wrongkind"}
OLD = BackboneSpec(name="oldapi", description="x", factory=_MLP.factory, params_model=_MLP.params_model, api_version=0)
MISNAMED = dataclasses.replace(_MLP, name="other")
def make():
    return dataclasses.replace(_MLP, name="fromcallable")
"""


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "mixed-plugins", {
        "mfkit.modalities": {"good": "goodmod:SPEC", "boom": "boommod:SPEC", "wrongkind": "goodmod:NOT_A_SPEC",
                             "toy2d": "goodmod:DUPLICATE"},
        "mfkit.backbones": {"oldapi": "goodmod:OLD", "misnamed": "goodmod:MISNAMED", "fromcallable": "goodmod:make"},
    }, {"goodmod": GOOD, "boommod": "raise ImportError('needs libfoo, which is not installed')\n"})
    monkeypatch.syspath_prepend(str(site))
    return Registry()


def test_builtins_are_registered_through_entry_points():
    registry = Registry()
    assert registry.modalities()["toy2d"].distribution.startswith("mfkit ")
    assert registry.backbones()["mlp"].spec.api_version == PLUGIN_API_VERSION


def test_good_plugins_load_beside_broken_ones(broken_site):
    assert {"good", "toy2d"} <= set(broken_site.modalities())
    assert "fromcallable" in broken_site.backbones() and "mlp" in broken_site.backbones()
    assert broken_site.modalities()["toy2d"].distribution.startswith("mfkit ")  # listed first


def test_a_name_two_packages_register_needs_the_package(broken_site):
    with pytest.raises(UnknownPluginError, match=r"registered by several packages \(mfkit 0\.1\.0, mixed-plugins "
                                                 r"0\.1\).*package: mfkit"):
        broken_site.modality("toy2d")
    assert broken_site.installed("mfkit.modalities", "toy2d", "mixed-plugins").distribution == "mixed-plugins 0.1"
    assert broken_site.installed("mfkit.modalities", "toy2d", "mfkit").package == "mfkit"
    with pytest.raises(UnknownPluginError, match="not registered by package 'other-pkg'"):
        broken_site.modality("toy2d", package="other-pkg")


VERSIONS = """
import dataclasses
from mfkit.builtin.mlp import SPEC as _MLP
V1 = dataclasses.replace(_MLP, name="v1net", api_version=1)
RANGE = dataclasses.replace(_MLP, name="rangenet", api_version=(1, 3))
FUTURE = dataclasses.replace(_MLP, name="futurenet", api_version=(3, 4))
"""


def test_api_version_ranges_and_v1_deprecation(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "versioned", {"mfkit.backbones": {
        "v1net": "vermod:V1", "rangenet": "vermod:RANGE", "futurenet": "vermod:FUTURE"}}, {"vermod": VERSIONS})
    monkeypatch.syspath_prepend(str(site))
    registry = Registry()
    with pytest.warns(DeprecationWarning, match="'v1net'.*API version 1"):
        found = registry.backbones()
    assert {"v1net", "rangenet"} <= set(found) and "futurenet" not in found
    problem = next(p for p in registry.problems() if p.name == "futurenet")
    assert "API version (3, 4)" in problem.reason and "loads versions 1, 2" in problem.reason


def test_each_problem_names_plugin_distribution_and_reason(broken_site):
    problems = {p.name: p for p in broken_site.problems()}
    assert "needs libfoo" in problems["boom"].reason and problems["boom"].distribution == "mixed-plugins 0.1"
    assert "not a ModalitySpec" in problems["wrongkind"].reason
    assert "registered by mfkit 0.1.0 and mixed-plugins 0.1" in problems["toy2d"].reason
    assert "API version 0" in problems["oldapi"].reason
    assert "named 'misnamed' but its spec is named 'other'" in problems["misnamed"].reason


def test_unknown_names_list_what_is_installed_with_a_suggestion(broken_site):
    with pytest.raises(UnknownPluginError, match=r"unknown modality 'tyo2d'\. Did you mean 'toy2d'\?.*Installed modality plugins: good, (.*, )?toy2d"):
        broken_site.modality("tyo2d")
    with pytest.raises(UnknownPluginError, match="installed but broken.*needs libfoo"):
        broken_site.modality("boom")


def test_refresh_finds_new_plugins(tmp_path, monkeypatch):
    registry = Registry()
    assert "good" not in registry.modalities()
    site = tmp_path / "later"
    write_distribution(site, "late-plugin", {"mfkit.modalities": {"good": "latemod:SPEC"}},
                       {"latemod": GOOD})
    monkeypatch.syspath_prepend(str(site))
    assert "good" not in registry.modalities()  # cached
    registry.refresh()
    assert "good" in registry.modalities()
