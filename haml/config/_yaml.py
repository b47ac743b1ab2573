"""Reading YAML for the configuration: files and the values of ``key=value`` overrides.

One loader, PyYAML's safe loader with two changes, reads both, so a number means the same thing in
a file and on the command line:

- ``1e-4``, ``5e-6``, ``1E5`` are floats. YAML 1.1 (PyYAML) needs a dot and a signed exponent
  (``1.0e-4``) and would read ``1e-4`` as the *string* "1e-4"; every learning rate in the papers'
  tables is written the short way.
- a key given twice in one mapping is an error (PyYAML silently keeps the last one, which hides
  a copy-paste slip in a config file).

Nothing is ever evaluated: only the safe tags (mappings, lists, strings, numbers, booleans, null)
are constructed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from haml.config._validate import ConfigError

__all__ = ["ConfigYAMLError", "dump_yaml", "parse_value", "read_yaml"]


class ConfigYAMLError(ConfigError):
    """A YAML text that cannot be read: bad syntax, a duplicate key, or not a mapping."""


# A float written with an exponent but without YAML 1.1's dot or exponent sign: 1e-4, 5e-6, 1E5,
# 2.5e3, .5e-3. (The YAML 1.1 resolver already covers 1.0e-4, 0.5, .inf and .nan.)
_SHORT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` + short-exponent floats + an error on duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _SHORT_FLOAT, list("-+0123456789."))


def _load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except yaml.YAMLError as error:
        raise ConfigYAMLError(f"{where}: invalid YAML: {error}") from None


def read_yaml(path: str | Path, where: str | None = None) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (an empty file gives ``{}``).

    ``where`` names the file in error messages (default: the path as given).
    """
    path = Path(path)
    where = str(path) if where is None else where
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such config file") from None
    except IsADirectoryError:
        raise ConfigYAMLError(f"{where}: is a directory, not a YAML config file") from None
    except UnicodeDecodeError as err:
        raise ConfigYAMLError(
            f"{where}: not a YAML text file (byte {err.start} is not UTF-8 text)"
        ) from None
    data = _load(text, where)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigYAMLError(f"{where}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_value(text: str, where: str = "value") -> Any:
    """A command-line value read as YAML: ``[128,128]`` a list, ``false`` a bool, ``null`` or
    nothing None, ``1e-4`` a float, ``{a: 1}`` a mapping; anything else stays a string."""
    if text.strip() == "":
        return None
    return _load(text, where)


class _Dumper(yaml.SafeDumper):
    """Block-style mappings; lists of scalars on one line (``hidden: [128, 128]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(not isinstance(item, (dict, list, tuple)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def dump_yaml(data: Any) -> str:
    """``data`` as YAML that :func:`read_yaml` reads back to the same values (keys in order)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
