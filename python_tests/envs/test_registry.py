"""haml.envs.registry: lazy families, clear errors on names, options and missing packages."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Literal

import pytest

from haml.envs import registry
from haml.envs.base import VectorMultiAgentEnv


def test_builtin_families_are_registered():
    assert {"mamujoco", "toy"} <= set(registry.env_names())
    assert registry.env_names() == sorted(registry.env_names())


def test_unknown_env_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown env 'mujoco'.*mamujoco.*toy"):
        registry.env_module("mujoco")
    with pytest.raises(ValueError, match="registered envs"):
        registry.make_env("mujoco", "HalfCheetah-2x3")


def test_names_and_options_need_no_simulator():
    """Listing tasks and options imports neither MuJoCo nor gymnasium_robotics."""
    code = (
        "import sys\n"
        "from haml.envs import registry\n"
        "assert 'HalfCheetah-2x3' in registry.task_names('mamujoco')\n"
        "assert registry.options_class('mamujoco').__name__ == 'Options'\n"
        "loaded = [m for m in ('mujoco', 'gymnasium_robotics', 'pettingzoo') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "import haml\n"
        "assert 'mujoco' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_missing_simulator_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(
        registry._FAMILIES,
        "fancy",
        registry._Family("haml.envs.mamujoco", requires=("haml_no_such_package",), extra="fancy"),
    )
    with pytest.raises(ImportError, match=r'haml_no_such_package.*pip install "haml\[fancy\]"'):
        registry.make_env("fancy", "HalfCheetah-2x3")
    # what needs no simulator still works
    assert "HalfCheetah-2x3" in registry.task_names("fancy")


def test_register_env_family_checks_the_name(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    registry.register_env_family("later", "haml.envs.later", requires=("x",), extra="later")
    assert "later" in registry.env_names()
    with pytest.raises(ValueError, match="identifier"):
        registry.register_env_family("not a name", "x")


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    count: int = 1
    scale: float = 1.0
    flag: bool = False
    limit: int | None = None
    mode: Literal["a", "b"] = "a"


def test_build_options_accepts_good_values():
    opts = registry.build_options(
        DemoOptions, {"count": 3, "scale": 2, "limit": None, "flag": True}
    )
    assert opts == DemoOptions(count=3, scale=2.0, flag=True, limit=None)
    assert isinstance(opts.scale, float)


def test_unknown_option_is_an_error_listing_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown option\(s\) 'cuont'.*valid options: count, scale, flag, limit, mode",
    ):
        registry.build_options(DemoOptions, {"cuont": 3})


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("count", 2.5, "int"),
        ("count", True, "int"),
        ("scale", "2", "float"),
        ("flag", 1, "bool"),
        ("limit", "7", "int | None"),
        ("mode", "c", r"one of \['a', 'b'\]"),
    ],
)
def test_wrongly_typed_option_is_an_error_naming_it(key, value, expected):
    with pytest.raises(TypeError, match=f"option '{key}' must be {expected}, got"):
        registry.build_options(DemoOptions, {key: value})


def test_make_env_checks_its_own_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        registry.make_env("mamujoco", "HalfCheetah-2x3", num_envs=0)
    with pytest.raises(TypeError, match="seed"):
        registry.make_env("mamujoco", "HalfCheetah-2x3", seed="1")


def test_make_env_rejects_bad_mamujoco_options_before_building():
    pytest.importorskip("gymnasium_robotics")
    with pytest.raises(
        ValueError, match="valid options: fully_observable, agent_obsk, episode_limit"
    ):
        registry.make_env("mamujoco", "HalfCheetah-2x3", episode_limt=10)
    with pytest.raises(TypeError, match="option 'episode_limit' must be int"):
        registry.make_env("mamujoco", "HalfCheetah-2x3", episode_limit="10")
    with pytest.raises(ValueError, match="unknown MaMuJoCo task 'HalfCheetah-3x3'"):
        registry.make_env("mamujoco", "HalfCheetah-3x3")


def test_make_env_builds_a_mamujoco_vector_env():
    pytest.importorskip("gymnasium_robotics")
    envs = registry.make_env(
        "mamujoco", "Hopper-3x1", num_envs=1, seed=0, episode_limit=50, fully_observable=False
    )
    try:
        assert isinstance(envs, VectorMultiAgentEnv)
        assert envs.spec.env == "mamujoco" and envs.spec.task == "Hopper-3x1"
        assert envs.spec.episode_limit == 50
        assert [envs.spec.obs_dim(i) for i in range(3)] == [8, 9, 8]
        assert envs.reset().obs[1].shape == (1, 9)
    finally:
        envs.close()


def test_package_reexports_the_registry():
    import haml.envs

    if getattr(haml.envs, "__file__", None) is None:
        pytest.skip("haml.envs is a namespace package in this editable install; reinstall haml")
    assert haml.envs.make_env is registry.make_env
    assert haml.envs.env_names is registry.env_names


# -- optional family hooks --------------------------------------------------------------------------


def test_family_hooks_are_found_through_the_registry():
    from haml.envs import mamujoco

    assert registry.family_hook("mamujoco", "episode_frames") is mamujoco.episode_frames
    assert registry.family_hook("toy", "episode_frames") is None
    assert registry.family_hook("toy", "jax_random_steps_per_second") is None
    assert "mamujoco" in registry.families_with_hook("episode_frames")
    assert "toy" not in registry.families_with_hook("episode_frames")


def test_smax_has_the_jax_only_hook():
    pytest.importorskip("jaxmarl")
    from haml.envs import smax

    assert registry.family_hook("smax", "jax_random_steps_per_second") is smax.jax_random_steps_per_second


def test_mpe_names_the_option_that_switches_its_action_kind():
    hook = registry.family_hook("mpe", "action_kind_option")
    assert hook("continuous") == "env.options.continuous_actions=true"
    assert hook("discrete") == "env.options.continuous_actions=false"
    assert hook("other") is None
    assert registry.families_with_hook("action_kind_option") == ["mpe"]


def test_an_unknown_hook_name_is_an_error_listing_the_hooks():
    with pytest.raises(ValueError, match="unknown env-family hook 'render'.*episode_frames"):
        registry.family_hook("mamujoco", "render")
    assert set(registry.FAMILY_HOOKS) == {"episode_frames", "jax_random_steps_per_second",
                                          "action_kind_option"}


def test_a_hook_that_is_not_a_function_is_an_error(monkeypatch):
    toy = registry.env_module("toy")
    monkeypatch.setattr(toy, "episode_frames", 3, raising=False)
    with pytest.raises(TypeError, match="'toy': hook 'episode_frames' must be a function"):
        registry.family_hook("toy", "episode_frames")


# -- one options check for make_env and the config loader -------------------------------------------


def test_make_env_option_errors_name_the_family_the_option_and_the_type():
    with pytest.raises(TypeError, match=r"env 'toy': option 'delay' must be int, got '2' \(str\)"):
        registry.make_env("toy", "memory", delay="2")
    with pytest.raises(ValueError, match=r"env 'toy': unknown option\(s\) 'dealy', 'n_agent'; valid options: n_agents"):
        registry.make_env("toy", "memory", dealy=2, n_agent=2)


def test_python_options_and_yaml_options_go_through_the_same_check():
    from haml.config import ConfigTypeError, load_config

    toy = registry.options_class("toy")
    # YAML writes 1e7 for a count, so an integral float is an int there; Python code is exact.
    assert load_config("happo", "toy", "memory", overrides=["env.options.delay=2.0"]).env.options["delay"] == 2
    with pytest.raises(TypeError, match="option 'delay' must be int, got 2.0"):
        registry.build_options(toy, {"delay": 2.0})
    # the same key, type and value wrong in both, named in each one's words
    with pytest.raises(ConfigTypeError, match="'env.options.death_prob' must be number"):
        load_config("happo", "toy", "memory", overrides=["env.options.death_prob=high"])
    with pytest.raises(ConfigTypeError, match="option 'death_prob' must be float"):
        registry.check_options(toy, {"death_prob": "high"})
