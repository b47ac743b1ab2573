"""Build an :class:`~haml.config.schema.ExperimentConfig` from the shipped YAML files and overrides.

Layers, lowest first (each later one wins, key by key)::

    1. the dataclass defaults                      haml/config/schema.py
    2. defaults/experiment.yaml                     every field of ExperimentConfig but ``algo``
    3. defaults/algos/<algo>.yaml                   the ``algo:`` section, and what the algorithm changes
    4. defaults/envs/<env>.yaml, in four steps:
         a. the family's sections                   (top of the file)
         b. algos.<algo>                            the family's per-algorithm values
         c. tasks.<task>                            the task's values
         d. tasks.<task>.algos.<algo>               the task's per-algorithm values (e.g. HATRPO's δ)
    5. tuned/<env>/<task>/<algo>.yaml               only with ``tuned=True``
    6. config_file                                   a user's YAML file
    7. overrides                                     ``section.key=value`` strings or a mapping

Every layer is checked strictly before it is merged (:mod:`haml.config._validate`): an unknown key
is a :class:`ConfigError` naming the full dotted key and listing the section's valid keys; a value
of the wrong type is a :class:`ConfigTypeError` naming the key. OmegaConf structured configs do the
merging (and check the types again); the dataclasses' ``__post_init__`` checks the values (e.g.
``algo.clip must be >= 0``). ``algo`` is typed by the algorithm's registry entry
(:class:`PPOConfig`, :class:`A2CConfig` or :class:`TRPOConfig`). ``env.options`` is checked against
the environment family's ``Options`` dataclass by :func:`haml.envs.registry.check_options`, the
check ``make_env`` runs too, and then holds every option (the family's defaults filled in), so a
saved config is complete. Every public function ends in one merge path (``_assemble``).

Nothing is ever ``eval()``ed: override values are read as YAML (``[128,128]``, ``false``, ``null``,
``1e-4``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from haml.config._validate import ConfigError, ConfigTypeError, check_section, field_types
from haml.config._yaml import dump_yaml, parse_value, read_yaml
from haml.config.schema import EnvConfig, ExperimentConfig

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "ConfigTypeError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "env_names_with_yaml",
    "load_config",
    "parse_override",
    "read_config",
    "save_config",
    "tuned_configs",
]

CONFIG_DIR = Path(__file__).resolve().parent
"""``haml/config``: ``defaults/`` and ``tuned/`` live here (shipped inside the wheel)."""
_DEFAULTS = CONFIG_DIR / "defaults"
_TUNED = CONFIG_DIR / "tuned"

# The env file's own structure keys (besides the ExperimentConfig sections).
_ALGOS_KEY = "algos"
_TASKS_KEY = "tasks"

Overrides = Sequence[str | tuple[str, Any]] | Mapping[str, Any]
"""``["algo.clip=0.1", "actor.hidden=[128,128]"]`` (values read as YAML), ``{"algo.clip": 0.1}``
(Python values, not parsed), or a list mixing strings and ``("algo.clip", 0.1)`` pairs; applied
in order, the later winning."""


# ----------------------------------------------------------------------------------------------
# names: algorithms, envs, tasks, tuned files


def _algo_spec(algo: Any) -> Any:
    # Imported here: haml.algorithms.registry imports haml.config.schema, which runs this package.
    from haml.algorithms.registry import algo_names, algo_spec

    try:
        return algo_spec(algo)
    except ValueError:
        raise ConfigError(f"unknown algorithm {algo!r}; choose one of {', '.join(algo_names())}") from None


def env_names_with_yaml() -> list[str]:
    """The environment families that have a ``defaults/envs/<env>.yaml``."""
    return sorted(p.stem for p in (_DEFAULTS / "envs").glob("*.yaml"))


def tuned_configs(env: str | None = None) -> list[tuple[str, str, str]]:
    """``(env, task, algo)`` of every shipped tuned config, optionally of one env family."""
    found = []
    for path in sorted(_TUNED.glob("*/*/*.yaml")):
        found.append((path.parent.parent.name, path.parent.name, path.stem))
    return [entry for entry in found if env is None or entry[0] == env]


def _env_registry() -> Any:
    """``haml.envs.registry`` (imported on first use: it imports this package's validator)."""
    from haml.envs import registry

    return registry


def _task_names(env: str) -> list[str]:
    try:
        return list(_env_registry().task_names(env))
    except ValueError as error:  # an env the registry does not know
        raise ConfigError(str(error)) from None


def _options_class(env: str) -> type:
    try:
        return _env_registry().options_class(env)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_options(env: str, layer: _Layer) -> None:
    """A layer's ``env.options`` checked against the family's Options by the registry's one
    options check, so that a misspelt option is reported with the file or override that has it."""
    options = layer.data.get("env", {}).get("options")
    if options:
        _env_registry().check_options(
            _options_class(env), options, source=layer.source, prefix="env.options.", kwargs=False
        )


def _check_task(env: str, task: Any, where: str = "") -> None:
    """``task`` must be a known task of ``env``.

    A family may accept tasks beyond its ``TASKS`` (MaMuJoCo: any factorisation gymnasium_robotics
    defines, ``ManyAgentSwimmer-<N>x<K>``); when its module has ``parse_task``, that decides.
    """
    where = f"{where}: " if where else ""
    if not isinstance(task, str):
        raise ConfigTypeError(f"{where}the task must be a string, got {task!r}")
    valid = _task_names(env)
    if task in valid:
        return
    module = _env_registry().env_module(env, check_requirements=False)
    parse_task = getattr(module, "parse_task", None)
    if parse_task is not None:
        try:
            parse_task(task)
            return
        except ImportError:
            return  # only the simulator could tell; the env reports it when built
        except ValueError as error:
            raise ConfigError(f"{where}unknown task {task!r} of env {env!r}: {error}") from None
    raise ConfigError(f"{where}unknown task {task!r} of env {env!r}; valid tasks: {', '.join(valid)}")


# ----------------------------------------------------------------------------------------------
# layers: a plain, checked mapping and where it came from


@dataclass(frozen=True)
class _Layer:
    source: str
    """Where the values come from, for messages: a file, or ``override 'key=value'``."""
    data: dict[str, Any]
    """Normalised by check_section; may hold an ``algo`` section."""


def _top_types(algo_cls: type | None) -> dict[str, Any]:
    """ExperimentConfig's sections with ``algo`` typed by the algorithm (or absent if None)."""
    types_ = dict(field_types(ExperimentConfig))
    if algo_cls is None:
        del types_["algo"]
    else:
        types_["algo"] = algo_cls
    return types_


def _check_layer(
    data: Any,
    source: str,
    algo_cls: type | None,
    prefix: str = "",
    drop: Sequence[str] = (),
    also_valid: Sequence[str] = (),
) -> dict[str, Any]:
    """``data`` checked as ExperimentConfig sections (``algo`` typed by ``algo_cls``; the fields
    in ``drop`` not allowed); a normalised copy."""
    types_ = _top_types(algo_cls)
    for name in drop:
        types_.pop(name, None)
    return check_section(data, ExperimentConfig, prefix=prefix, source=source, types_=types_, also_valid=also_valid)


def _relative(path: Path) -> str:
    """A shipped file named relative to haml/config (no machine paths in messages or logs)."""
    try:
        return str(PurePath("haml/config") / path.resolve().relative_to(CONFIG_DIR))
    except ValueError:
        return str(path)


def _read_layer(path: Path, algo_cls: type | None) -> _Layer:
    """A shipped YAML file (experiment, algorithm or tuned) as a checked layer."""
    source = _relative(path)
    if not path.is_file():
        raise ConfigError(f"{source}: missing (it is part of the package)")
    return _Layer(source, _check_layer(read_yaml(path, source), source, algo_cls))


# ----------------------------------------------------------------------------------------------
# the env file: family sections + algos.<algo> + tasks.<task> (+ tasks.<task>.algos.<algo>)


@dataclass(frozen=True)
class _EnvFile:
    source: str
    default_task: str
    family: dict[str, Any]
    algos: dict[str, dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    task_algos: dict[str, dict[str, dict[str, Any]]]


def _split(data: Mapping[str, Any], key: str, source: str, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``data`` without ``key``, the mapping under ``key``)."""
    rest = {k: v for k, v in data.items() if k != key}
    sub = data.get(key, {})
    if sub is None:
        sub = {}
    if not isinstance(sub, Mapping):
        raise ConfigTypeError(f"{source}: '{where}{key}' must be a mapping, got {sub!r}")
    return rest, dict(sub)


def _check_env_fixed(data: Mapping[str, Any], source: str, prefix: str) -> None:
    """env.name / env.task are fixed by the file (name) and its top (default task)."""
    env_section = data.get("env", {}) or {}
    for name in ("name", "task"):
        if isinstance(env_section, Mapping) and name in env_section:
            raise ConfigError(
                f"{source}: '{prefix}env.{name}' cannot be set here; env.name is the file's name and "
                "env.task (the default task) is set once, at the top of the file"
            )


def _check_algo_sections(data: Mapping[str, Any], source: str, prefix: str) -> dict[str, dict[str, Any]]:
    from haml.algorithms.registry import algo_names

    out = {}
    for algo, section in data.items():
        if algo not in algo_names():
            raise ConfigError(
                f"{source}: unknown algorithm '{prefix}{algo}'; valid algorithms: {', '.join(algo_names())}"
            )
        sub_prefix = f"{prefix}{algo}."
        spec = _algo_spec(algo)
        if section is None:
            section = {}
        _check_env_fixed(section if isinstance(section, Mapping) else {}, source, sub_prefix)
        out[algo] = _check_layer(section, source, spec.config_cls, prefix=sub_prefix, drop=("algo_name",))
    return out


def _read_env_file(env: str) -> _EnvFile:
    path = _DEFAULTS / "envs" / f"{env}.yaml"
    source = _relative(path)
    raw = read_yaml(path, where=source)
    family, algos = _split(raw, _ALGOS_KEY, source, "")
    family, tasks = _split(family, _TASKS_KEY, source, "")

    env_section = family.get("env", {}) or {}
    if not isinstance(env_section, Mapping) or not isinstance(env_section.get("task"), str):
        raise ConfigError(f"{source}: the file must give its default task as 'env.task'")
    if env_section.get("name", env) != env:
        raise ConfigError(f"{source}: 'env.name' is {env_section['name']!r} but the file is for {env!r}")
    family_layer = _check_layer(family, source, None, drop=("algo_name",), also_valid=(_ALGOS_KEY, _TASKS_KEY))
    default_task = env_section["task"]
    _check_task(env, default_task, f"{source}: env.task")
    # name and default task are not values to merge: the loader sets the run's own.
    if "env" in family_layer:
        family_layer["env"] = {k: v for k, v in family_layer["env"].items() if k not in ("name", "task")}

    algo_layers = _check_algo_sections(algos, source, f"{_ALGOS_KEY}.")
    task_layers: dict[str, dict[str, Any]] = {}
    task_algo_layers: dict[str, dict[str, dict[str, Any]]] = {}
    for task, section in tasks.items():
        prefix = f"{_TASKS_KEY}.{task}."
        _check_task(env, task, f"{source}: '{_TASKS_KEY}'")
        section = {} if section is None else section
        if not isinstance(section, Mapping):
            raise ConfigTypeError(f"{source}: '{prefix[:-1]}' must be a mapping, got {section!r}")
        rest, per_algo = _split(section, _ALGOS_KEY, source, prefix)
        _check_env_fixed(rest, source, prefix)
        task_layers[task] = _check_layer(
            rest, source, None, prefix=prefix, drop=("algo_name",), also_valid=(_ALGOS_KEY,)
        )
        task_algo_layers[task] = _check_algo_sections(per_algo, source, f"{prefix}{_ALGOS_KEY}.")
    env_file = _EnvFile(source, default_task, family_layer, algo_layers, task_layers, task_algo_layers)
    for where, data in _env_file_sections(env_file):
        _check_options(env, _Layer(f"{source} ({where})", data))
    return env_file


def _env_file_sections(env_file: _EnvFile) -> list[tuple[str, dict[str, Any]]]:
    """Every section of an env file with its place in the file."""
    sections = [("top level", env_file.family)]
    sections += [(f"{_ALGOS_KEY}.{algo}", data) for algo, data in env_file.algos.items()]
    for task, data in env_file.tasks.items():
        sections.append((f"{_TASKS_KEY}.{task}", data))
        sections += [(f"{_TASKS_KEY}.{task}.{_ALGOS_KEY}.{a}", d) for a, d in env_file.task_algos[task].items()]
    return sections


# ----------------------------------------------------------------------------------------------
# overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` → ``("section.key", value)``, the value read as YAML.

    A text without ``=`` or with an empty key is a :class:`ConfigError`.
    """
    if not isinstance(text, str):
        raise ConfigTypeError(f"an override must be a string 'section.key=value', got {text!r}")
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"override {text!r} has no '='; write section.key=value, e.g. train.steps=1000000")
    _check_dotted_key(key, f"override {text!r}")
    return key, parse_value(raw, where=f"override {text!r}")


def _check_dotted_key(key: Any, where: str) -> None:
    if not isinstance(key, str):
        raise ConfigTypeError(f"{where}: keys must be strings, got {key!r}")
    if not key or any(part.strip() != part or not part for part in key.split(".")):
        raise ConfigError(f"{where}: malformed key {key!r}; write dotted names such as 'train.steps'")


def _nest(key: str, value: Any) -> dict[str, Any]:
    """``("a.b.c", v)`` → ``{"a": {"b": {"c": v}}}``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _override_items(overrides: Overrides | None) -> list[tuple[str, dict[str, Any]]]:
    """(source, nested mapping) per override, in order."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise ConfigTypeError(
            f"overrides must be a list of 'section.key=value' strings or a mapping, got the string {overrides!r}"
        )
    items = []
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            _check_dotted_key(key, f"override {key!r}")
            items.append((f"override '{key}'", _nest(key, value)))
    else:
        for item in overrides:
            if isinstance(item, tuple) and len(item) == 2:  # (dotted key, Python value): not parsed
                key, value = item
                _check_dotted_key(key, f"override {key!r}")
                items.append((f"override '{key}'", _nest(key, value)))
            else:
                key, value = parse_override(item)
                items.append((f"override '{item}'", _nest(key, value)))
    return items


# ----------------------------------------------------------------------------------------------
# merging and finishing


def _base_node(algo_cls: type) -> DictConfig:
    node = OmegaConf.structured(ExperimentConfig)
    node.algo = OmegaConf.structured(algo_cls)
    return node


def _merge(node: DictConfig, layer: _Layer) -> DictConfig:
    try:
        return OmegaConf.merge(node, layer.data)
    except ConfigKeyError as error:  # a key check_section let through (should not happen)
        raise ConfigError(f"{layer.source}: unknown key '{error.full_key}'") from None
    except OmegaConfBaseException as error:
        message = str(getattr(error, "msg", error)).splitlines()[0]
        raise ConfigTypeError(f"{layer.source}: '{error.full_key}': {message}") from None


def _plain(value: Any) -> Any:
    """Plain YAML-safe data: dataclasses → dicts, tuples → lists, enums → values, paths → str."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    return value


def _resolve_options(env: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """env.options checked against the family's Options dataclass, with its defaults filled in."""
    try:
        resolved = _env_registry().build_options(
            _options_class(env), options, source=f"env {env!r}", prefix="env.options.", kwargs=False
        )
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:  # the Options' own value checks
        raise ConfigError(f"env.options of {env!r}: {error}") from None
    return _plain(resolved)


def _finish(node: DictConfig, algo_cls: type, resolve_options: bool = True) -> ExperimentConfig:
    """Options resolved, the dataclasses built (their ``__post_init__`` checks run)."""
    if resolve_options:
        node.env.options = _resolve_options(node.env.name, OmegaConf.to_container(node.env.options))
    try:
        cfg = OmegaConf.to_object(node)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
    except OmegaConfBaseException as error:
        raise ConfigError(str(getattr(error, "msg", error)).splitlines()[0]) from None
    if not isinstance(cfg.algo, algo_cls):  # OmegaConf builds it from the typed node
        raise ConfigError(f"internal: algo section built as {type(cfg.algo).__name__}, not {algo_cls.__name__}")
    return cfg


def _claims(layer: _Layer) -> tuple[Any, Any, Any]:
    """(algo_name, env.name, env.task) as set by a layer, None where it sets none."""
    env_section = layer.data.get("env", {})
    return layer.data.get("algo_name"), env_section.get("name"), env_section.get("task")


@dataclass(frozen=True)
class _Run:
    """What a config is for: every layer must agree with it."""

    algo: str
    env: str
    task: str
    env_object: bool = False
    """The caller built the environment object: ``env.options`` stay empty and are not checked."""
    resumed: bool = False
    """A saved config with overrides: ``algo_name`` and ``env.name`` cannot change; each task a
    layer names is checked, the last one wins."""


def _check_claims(layer: _Layer, run: _Run) -> None:
    """``layer`` names no other algorithm, env or task than ``run``'s."""
    algo, env, task = _claims(layer)
    if run.resumed:
        for key, claimed, fixed in (("algo_name", algo, run.algo), ("env.name", env, run.env)):
            if claimed is not None and claimed != fixed:
                raise ConfigError(f"{layer.source}: {key} cannot change from {fixed!r}")
        if task is not None:
            _check_task(run.env, task, layer.source)
        return
    for key, what, claimed, expected in (
        ("algo_name", "algorithm", algo, run.algo), ("env.name", "env", env, run.env),
        ("env.task", "task", task, run.task),
    ):
        if claimed is not None and claimed != expected:
            raise ConfigError(f"{layer.source}: {key} is {claimed!r} but the {what} is {expected!r}")


def _assemble(algo_cls: type, layers: Sequence[_Layer], run: _Run) -> ExperimentConfig:
    """The one merge path: the layers checked against ``run`` (their env options against the
    family's), merged in order onto the dataclass defaults, the run's names set, and the result
    finished (options resolved, the dataclasses' own checks run)."""
    for layer in layers:
        if not run.env_object:
            _check_options(run.env, layer)
        _check_claims(layer, run)
    node = _base_node(algo_cls)
    for layer in layers:
        node = _merge(node, layer)
    node.algo_name, node.env.name, node.env.task = run.algo, run.env, run.task
    if run.env_object:
        node.env.options = {}
    return _finish(node, algo_cls, resolve_options=not run.env_object)


# ----------------------------------------------------------------------------------------------
# public API


def load_config(
    algo: str,
    env: str,
    task: str | None = None,
    overrides: Overrides = (),
    tuned: bool = False,
    config_file: str | os.PathLike[str] | None = None,
    external_env: bool = False,
) -> ExperimentConfig:
    """The resolved config of ``algo`` on ``env``/``task`` (the module docstring lists the layers).

    ``external_env``: the caller built the environment object itself (``haml.train(algo,
    MatrixGame(...))``): ``env`` is its family and ``task`` its task as its spec says. The family's
    YAML layers apply when it has a file (its family-wide and per-algo sections, not a task's), the
    task is not checked against the registry, and ``env.options`` end up empty (the object is
    already built).

    ``task`` None takes the env file's default task, unless ``config_file`` or an override sets
    ``env.task``. ``tuned`` adds ``tuned/<env>/<task>/<algo>.yaml`` (an error listing the shipped
    ones if there is none). Raises :class:`ConfigError` (a ValueError) or :class:`ConfigTypeError`
    (also a TypeError) naming the file or override and the dotted key.
    """
    spec = _algo_spec(algo)
    algo_cls = spec.config_cls
    user_layers = _user_layers(config_file, overrides, algo_cls)
    if external_env:
        return _load_external(algo_cls, algo, env, task, user_layers)
    if not isinstance(env, str) or env not in env_names_with_yaml():
        raise ConfigError(f"unknown env {env!r}; envs with a config: {', '.join(env_names_with_yaml())}")
    env_file = _read_env_file(env)
    if task is None:  # the file's default task, unless the user's layers choose one
        claimed = [_claims(layer)[2] for layer in user_layers]
        task = next((t for t in reversed(claimed) if t is not None), env_file.default_task)
    _check_task(env, task)
    layers = [*_default_layers(algo, algo_cls), *_env_file_layers(env_file, algo, task)]
    if tuned:
        layers.append(_tuned_layer(env, task, algo, algo_cls))
    return _assemble(algo_cls, [*layers, *user_layers], _Run(algo, env, task))


def _user_layers(
    config_file: str | os.PathLike[str] | None, overrides: Overrides, algo_cls: type
) -> list[_Layer]:
    """The user's config file, then each override, as checked layers."""
    layers = []
    if config_file is not None:
        path = Path(config_file)
        source = f"config file {str(path)!r}"
        layers.append(_Layer(source, _check_layer(read_yaml(path), source, algo_cls)))
    for source, data in _override_items(overrides):
        layers.append(_Layer(source, _check_layer(data, source, algo_cls)))
    return layers


def _default_layers(algo: str, algo_cls: type) -> list[_Layer]:
    """defaults/experiment.yaml (less the run's names, which every run sets itself) and
    defaults/algos/<algo>.yaml."""
    base = _read_layer(_DEFAULTS / "experiment.yaml", None)
    data = {key: value for key, value in base.data.items() if key != "algo_name"}
    if "env" in data:
        data["env"] = {key: value for key, value in data["env"].items() if key not in ("name", "task")}
    return [_Layer(base.source, data), _read_layer(_DEFAULTS / "algos" / f"{algo}.yaml", algo_cls)]


def _env_file_layers(env_file: _EnvFile, algo: str, task: str | None) -> list[_Layer]:
    """The env file's sections that apply to ``algo`` on ``task``, lowest first (``task`` None:
    the family-wide ones only)."""
    src = env_file.source
    layers = [_Layer(src, env_file.family)]
    if algo in env_file.algos:
        layers.append(_Layer(f"{src} ({_ALGOS_KEY}.{algo})", env_file.algos[algo]))
    if task in env_file.tasks:
        layers.append(_Layer(f"{src} ({_TASKS_KEY}.{task})", env_file.tasks[task]))
    if algo in env_file.task_algos.get(task, {}):
        layers.append(_Layer(f"{src} ({_TASKS_KEY}.{task}.{_ALGOS_KEY}.{algo})", env_file.task_algos[task][algo]))
    return layers


def _tuned_layer(env: str, task: str, algo: str, algo_cls: type) -> _Layer:
    """tuned/<env>/<task>/<algo>.yaml, or an error listing the shipped tuned configs of ``env``."""
    path = _TUNED / env / task / f"{algo}.yaml"
    if not path.resolve().is_relative_to(_TUNED.resolve()) or not path.is_file():
        shipped = [f"{t}/{a}" for _, t, a in tuned_configs(env)]
        raise ConfigError(
            f"no tuned config for {algo!r} on {env}/{task}; tuned configs of {env!r}: "
            f"{', '.join(shipped) if shipped else 'none'}"
        )
    return _read_layer(path, algo_cls)


def _load_external(
    algo_cls: type, algo: str, env: str, task: str | None, user_layers: list[_Layer]
) -> ExperimentConfig:
    """load_config for an environment object: the family file's sections without their ``env``
    section (default task and options are for the tasks the family builds)."""
    if not isinstance(env, str) or not isinstance(task, str):
        raise ConfigTypeError(f"an environment object's spec must name its env and task, got {env!r}, {task!r}")
    layers = _default_layers(algo, algo_cls)
    if env in env_names_with_yaml():
        layers += _env_file_layers(_read_env_file(env), algo, None)
    layers = [_Layer(layer.source, {k: v for k, v in layer.data.items() if k != "env"}) for layer in layers]
    for layer in user_layers:
        if "env" in layer.data:
            raise ConfigError(f"{layer.source}: env settings do not apply to an environment object")
    return _assemble(algo_cls, [*layers, *user_layers], _Run(algo, env, task, env_object=True))


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """``cfg`` as plain YAML-safe data (``algo_name`` and the ``algo`` section included)."""
    if not isinstance(cfg, ExperimentConfig):
        raise ConfigTypeError(f"config_to_dict: expected an ExperimentConfig, got {type(cfg).__name__}")
    if not dataclasses.is_dataclass(cfg.algo):
        raise ConfigTypeError(f"config_to_dict: cfg.algo must be an algorithm config, got {cfg.algo!r}")
    return _plain(cfg)


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> ExperimentConfig:
    """An :class:`ExperimentConfig` from plain data (e.g. a saved ``config.yaml``), checked as
    strictly as :func:`load_config`. ``algo_name`` is required (it types ``algo``); keys not given
    take the *dataclass* defaults, not the YAML defaults."""
    return _from_saved(data, source, overrides=())


def read_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """A config saved by :func:`save_config` (a run's ``config.yaml``), re-validated."""
    return config_from_dict(read_yaml(path), source=str(path))


def apply_overrides(cfg: ExperimentConfig, overrides: Overrides) -> ExperimentConfig:
    """A new config: ``cfg`` with ``overrides`` applied and everything re-validated.

    For resuming (``haml train --resume RUN_DIR train.steps=...``): ``algo_name`` and ``env.name``
    cannot change (the checkpoint holds that algorithm's networks for that env).
    """
    return _from_saved(config_to_dict(cfg), "config", overrides)


def _from_saved(data: Mapping[str, Any], source: str, overrides: Overrides) -> ExperimentConfig:
    """A saved config (``data``, the dataclass defaults below it) with ``overrides`` on top."""
    if not isinstance(data, Mapping):
        raise ConfigTypeError(f"{source}: expected a mapping, got {type(data).__name__}")
    if "algo_name" not in data:
        raise ConfigError(f"{source}: 'algo_name' is missing (it says which algorithm config 'algo' is)")
    algo = data["algo_name"]
    algo_cls = _algo_spec(algo).config_cls
    layers = [_Layer(source, _check_layer(data, source, algo_cls)), *_user_layers(None, overrides, algo_cls)]
    env_section = layers[0].data.get("env", {})
    env = env_section.get("name", EnvConfig.name)
    task = env_section.get("task", EnvConfig.task)
    _check_task(env, task, f"{source}: env.task")
    for layer in layers[1:]:
        task = _claims(layer)[2] or task
    return _assemble(algo_cls, layers, _Run(algo, env, task, resumed=True))


def save_config(cfg: ExperimentConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML to ``path`` atomically (temp file + rename); returns the path."""
    path = Path(path)
    text = dump_yaml(config_to_dict(cfg))
    header = "# haml: the resolved config of a run (haml.config.save_config); read with haml.config.read_config\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(header + text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
