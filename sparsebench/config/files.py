"""Config and sweep files read strictly as YAML, and dotted ``key=value`` overrides.

A file that is missing, not UTF-8, empty, not a mapping, not valid YAML or that gives a key
twice is a :class:`~sparsebench.config.schema.ConfigError` naming the file and the place (line and
column counted from 1); so is an override without ``=`` or one given twice on a command line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .schema import ConfigError


class _DuplicateKey(Exception):
    def __init__(self, key: str, where: str):
        super().__init__(key)
        self.key, self.where = key, where


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: PyYAML's own error says so below
                continue
            if first != key_node.start_mark.line + 1:
                raise _DuplicateKey(str(key), f"lines {first} and {key_node.start_mark.line + 1}")
        return super().construct_mapping(node, deep)


def _nearby_files(path: Path) -> str:
    """``; did you mean configs/fmnist_mlp.yaml?`` or the YAML files of the folder named."""
    import difflib

    folder = path.parent
    if not folder.is_dir():
        return f" (no folder {folder} either)" if str(folder) not in ("", ".") else ""
    names = sorted(p.name for p in folder.glob("*.yaml"))
    close = difflib.get_close_matches(path.name, names, n=1)
    if close:
        return f"; did you mean {folder / close[0]}?"
    return f"; YAML files in {folder}: {', '.join(names)}" if names else ""


def yaml_error_text(err: yaml.YAMLError) -> str:
    """Where a YAML syntax error is and what it is: ``at line 3, column 12: expected ',' or
    ']', but got '<stream end>' (in the flow sequence that starts at line 1, column 10); ...``
    (lines and columns counted from 1, as editors do)."""
    mark = getattr(err, "problem_mark", None)
    if mark is None:
        return f"({str(err).splitlines()[0]})"
    place = f"line {mark.line + 1}, column {mark.column + 1}"
    if "<stream end>" in str(err.problem):  # a bracket or quote left open until the end
        place = f"the end of the file ({place})"
    text = f"at {place}: {err.problem}"
    context, where = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and where is not None and (where.line, where.column) != (mark.line, mark.column):
        text += f" (in {context.removeprefix('while parsing ')} that starts at line " \
                f"{where.line + 1}, column {where.column + 1})"
    if "'\\t'" in str(err.problem):
        return text + "; YAML indents with spaces, never tabs"
    return text + "; check the brackets, quotes, colons and indentation there"


def load_yaml(path: str | Path) -> dict:
    """A config or sweep file as a dict; a missing, non-UTF-8, empty or non-mapping file and a
    key given twice are ConfigErrors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"config file not found: {path}{_nearby_files(path)}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("", f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at "
                              f"offset {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise ConfigError("", f"{path}: cannot read ({err.strerror or err})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise ConfigError("", f"{path}: not valid YAML {yaml_error_text(err)}") from None
    except _DuplicateKey as err:
        raise ConfigError(err.key, f"given twice in {path} ({err.where}); keep one") from None
    if data is None:
        # An empty file is almost always a mistake (a wrong path, a failed copy); training all
        # defaults silently would hide it. `{}` says "the defaults" on purpose.
        raise ConfigError("", f"{path}: empty file (write {{}} to mean all defaults)")
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping at the top level")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed value); values are read as YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(text, "an override must look like key=value (e.g. density=0.05)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(text, "empty key in override")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section")
        node = child
    node[parts[-1]] = value


def check_unique_overrides(texts: list[str]) -> list[tuple[str, Any]]:
    """The command line's ``key=value`` overrides parsed; a key given twice (or a key and a
    field inside it, such as ``optim={lr: 1}`` and ``optim.lr=2``) is an error rather than the
    last one winning silently. (Programs that build override lists may still layer them.)"""
    items = [parse_override(text) for text in texts]
    seen: dict[str, str] = {}
    for (key, _), text in zip(items, texts):
        for other, other_text in seen.items():
            if key == other or key.startswith(other + ".") or other.startswith(key + "."):
                raise ConfigError(key, f"given twice on the command line ({other_text} and "
                                       f"{text}); keep one")
        seen[key] = text
    return items


def apply_overrides(data: dict, overrides: list[str] | dict) -> dict:
    data = json.loads(json.dumps(data))  # deep copy of plain data
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(data, key, value)
    return data
