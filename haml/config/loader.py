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
the environment family's ``Options`` dataclass when ``haml.envs.registry.options_class`` exists,
and then holds every option (the family's defaults filled in), so a saved config is complete.

Nothing is ever ``eval()``ed: override values are read as YAML (``[128,128]``, ``false``, ``null``,
``1e-4``).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
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
from haml.config.schema import ExperimentConfig

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


def _env_registry() -> Any | None:
    """``haml.envs.registry`` if it exists (written separately), else None."""
    try:
        return importlib.import_module("haml.envs.registry")
    except ModuleNotFoundError as error:
        if error.name in ("haml.envs.registry", "haml.envs"):
            return None
        raise


def _task_names(env: str) -> list[str] | None:
    registry = _env_registry()
    if registry is None or not hasattr(registry, "task_names"):
        return None
    try:
        return list(registry.task_names(env))
    except ValueError as error:  # an env the registry does not know
        raise ConfigError(str(error)) from None


def _options_class(env: str) -> type | None:
    registry = _env_registry()
    if registry is None or not hasattr(registry, "options_class"):
        return None
    try:
        return registry.options_class(env)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_options(env: str, layer: _Layer) -> None:
    """A layer's ``env.options`` keys and types checked against the family's Options, so that a
    misspelt option is reported with the file or override that has it."""
    options = layer.data.get("env", {}).get("options")
    options_cls = _options_class(env) if options else None
    if options_cls is not None:
        check_section(options, options_cls, prefix="env.options.", source=layer.source)


def _check_task(env: str, task: Any, where: str = "") -> None:
    """``task`` must be a known task of ``env`` (when the env registry exists).

    A family may accept tasks beyond its ``TASKS`` (MaMuJoCo: any factorisation gymnasium_robotics
    defines, ``ManyAgentSwimmer-<N>x<K>``); when its module has ``parse_task``, that decides.
    """
    where = f"{where}: " if where else ""
    if not isinstance(task, str):
        raise ConfigTypeError(f"{where}the task must be a string, got {task!r}")
    valid = _task_names(env)
    if valid is None or task in valid:
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
    options_cls = _options_class(env)
    if options_cls is None:
        return dict(options)
    checked = check_section(options, options_cls, prefix="env.options.", source=f"env {env!r}")
    try:
        resolved = options_cls(**checked)
    except (TypeError, ValueError) as error:
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
    if external_env:
        return _load_external(algo_cls, algo, env, task, overrides, config_file)
    if not isinstance(env, str) or env not in env_names_with_yaml():
        raise ConfigError(f"unknown env {env!r}; envs with a config: {', '.join(env_names_with_yaml())}")
    env_file = _read_env_file(env)

    # The user's layers come first: they may choose the task.
    user_layers = []
    if config_file is not None:
        path = Path(config_file)
        data = read_yaml(path)
        source = f"config file {str(path)!r}"
        user_layers.append(_Layer(source, _check_layer(data, source, algo_cls)))
    for source, data in _override_items(overrides):
        user_layers.append(_Layer(source, _check_layer(data, source, algo_cls)))

    if task is None:
        task = env_file.default_task
        for layer in user_layers:
            claimed = _claims(layer)[2]
            task = task if claimed is None else claimed
    _check_task(env, task)

    layers = [
        _read_layer(_DEFAULTS / "experiment.yaml", None),
        _read_layer(_DEFAULTS / "algos" / f"{algo}.yaml", algo_cls),
    ]
    src = env_file.source
    layers.append(_Layer(src, env_file.family))
    if algo in env_file.algos:
        layers.append(_Layer(f"{src} ({_ALGOS_KEY}.{algo})", env_file.algos[algo]))
    if task in env_file.tasks:
        layers.append(_Layer(f"{src} ({_TASKS_KEY}.{task})", env_file.tasks[task]))
    if algo in env_file.task_algos.get(task, {}):
        layers.append(_Layer(f"{src} ({_TASKS_KEY}.{task}.{_ALGOS_KEY}.{algo})", env_file.task_algos[task][algo]))
    if tuned:
        path = _TUNED / env / task / f"{algo}.yaml"
        if not path.resolve().is_relative_to(_TUNED.resolve()) or not path.is_file():
            shipped = [f"{t}/{a}" for _, t, a in tuned_configs(env)]
            raise ConfigError(
                f"no tuned config for {algo!r} on {env}/{task}; tuned configs of {env!r}: "
                f"{', '.join(shipped) if shipped else 'none'}"
            )
        layers.append(_read_layer(path, algo_cls))
    layers.extend(user_layers)

    for layer in layers:
        _check_options(env, layer)
    # Every layer but the base file must agree with the run's algo, env and task.
    for layer in layers[1:]:
        claimed_algo, claimed_env, claimed_task = _claims(layer)
        if claimed_algo is not None and claimed_algo != algo:
            raise ConfigError(f"{layer.source}: algo_name is {claimed_algo!r} but the algorithm is {algo!r}")
        if claimed_env is not None and claimed_env != env:
            raise ConfigError(f"{layer.source}: env.name is {claimed_env!r} but the env is {env!r}")
        if claimed_task is not None and claimed_task != task:
            raise ConfigError(f"{layer.source}: env.task is {claimed_task!r} but the task is {task!r}")

    node = _base_node(algo_cls)
    for layer in layers:
        node = _merge(node, layer)
    node.algo_name = algo
    node.env.name = env
    node.env.task = task
    return _finish(node, algo_cls)


def _load_external(
    algo_cls: type, algo: str, env: str, task: str | None, overrides: Overrides,
    config_file: str | os.PathLike[str] | None,
) -> ExperimentConfig:
    if not isinstance(env, str) or not isinstance(task, str):
        raise ConfigTypeError(f"an environment object's spec must name its env and task, got {env!r}, {task!r}")
    layers = [
        _read_layer(_DEFAULTS / "experiment.yaml", None),
        _read_layer(_DEFAULTS / "algos" / f"{algo}.yaml", algo_cls),
    ]
    if env in env_names_with_yaml():
        env_file = _read_env_file(env)
        layers.append(_Layer(env_file.source, env_file.family))
        if algo in env_file.algos:
            layers.append(_Layer(f"{env_file.source} ({_ALGOS_KEY}.{algo})", env_file.algos[algo]))
    # The family file's env section (default task, options) is for the tasks it builds.
    layers = [_Layer(layer.source, {k: v for k, v in layer.data.items() if k != "env"}) for layer in layers]
    user_layers = []
    if config_file is not None:
        path = Path(config_file)
        source = f"config file {str(path)!r}"
        user_layers.append(_Layer(source, _check_layer(read_yaml(path), source, algo_cls)))
    for source, data in _override_items(overrides):
        user_layers.append(_Layer(source, _check_layer(data, source, algo_cls)))
    for layer in user_layers:
        if "env" in layer.data:
            raise ConfigError(f"{layer.source}: env settings do not apply to an environment object")
    node = _base_node(algo_cls)
    for layer in [*layers, *user_layers]:
        node = _merge(node, layer)
    node.algo_name = algo
    node.env.name = env
    node.env.task = task
    node.env.options = {}
    return _finish(node, algo_cls, resolve_options=False)


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
    if not isinstance(data, Mapping):
        raise ConfigTypeError(f"{source}: expected a mapping, got {type(data).__name__}")
    if "algo_name" not in data:
        raise ConfigError(f"{source}: 'algo_name' is missing (it says which algorithm config 'algo' is)")
    spec = _algo_spec(data["algo_name"])
    layer = _Layer(source, _check_layer(data, source, spec.config_cls))
    node = _merge(_base_node(spec.config_cls), layer)
    _check_task(node.env.name, node.env.task, f"{source}: env.task")
    return _finish(node, spec.config_cls)


def read_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """A config saved by :func:`save_config` (a run's ``config.yaml``), re-validated."""
    return config_from_dict(read_yaml(path), source=str(path))


def apply_overrides(cfg: ExperimentConfig, overrides: Overrides) -> ExperimentConfig:
    """A new config: ``cfg`` with ``overrides`` applied and everything re-validated.

    For resuming (``haml train --resume RUN_DIR train.steps=...``): ``algo_name`` and ``env.name``
    cannot change (the checkpoint holds that algorithm's networks for that env).
    """
    base = config_to_dict(cfg)
    spec = _algo_spec(base["algo_name"])
    node = _merge(_base_node(spec.config_cls), _Layer("config", _check_layer(base, "config", spec.config_cls)))
    for source, data in _override_items(overrides):
        layer = _Layer(source, _check_layer(data, source, spec.config_cls))
        claimed_algo, claimed_env, claimed_task = _claims(layer)
        if claimed_algo is not None and claimed_algo != base["algo_name"]:
            raise ConfigError(f"{source}: algo_name cannot change from {base['algo_name']!r}")
        if claimed_env is not None and claimed_env != base["env"]["name"]:
            raise ConfigError(f"{source}: env.name cannot change from {base['env']['name']!r}")
        if claimed_task is not None:
            _check_task(base["env"]["name"], claimed_task, source)
        node = _merge(node, layer)
    return _finish(node, spec.config_cls)


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
