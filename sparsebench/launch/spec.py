"""Sweep files: a base run config, a grid of values, extra and excluded cells, SLURM settings.

``sweeps/NAME.yaml``::

    name: fmnist_densities           # must equal the file's stem
    description: one line
    base: configs/fmnist_mlp.yaml    # a run config: by name among the configs folders (optional)
    overrides: {epochs: 10}          # dotted or nested keys on top of the base (optional)
    grid:                            # cartesian product; the first key varies slowest
      method.name: [dense, static]   # a dotted field ...
      method: [{name: rigl, interval: 100}, gse]   # ... or a whole section (a mapping or a name)
      density: [0.5, 0.1]
      together:                      # one axis of fields set together (paired values)
        - {model.width: 2, density: 0.05}
    include: [{method.name: snip, density: 0.1}]   # extra cells on top of base + overrides
    exclude: [{method.name: dense, density: 0.5}]  # grid cells matching every given key are dropped
    slurm: {partition: debug, time_min: 60, ...}   # see slurm_spec.SlurmSpec

A sweep may ``extends: OTHER`` (a name in sweeps/ or a path): it starts from OTHER's file and
changes only what it names (:func:`merge_specs`), so that, e.g., the paper's extended-training
sweep stays the CIFAR-100 sweep with other epochs and cannot drift from it.

Every value is applied the same way (:func:`apply_values`): a dotted key sets one field, a
mapping under a section key (``data: {train_subset: 2048}``) sets the fields it names and keeps
the others, and a mapping (or a bare name) under ``method`` replaces the whole method section,
since a method's parameters belong to that method. Order: base, ``overrides``, the cell's
values, then ``key=value`` overrides from the command line. As in GitHub Actions' job matrix,
``exclude`` is applied to the grid product before ``include`` adds its cells.

Each cell then resolves through :func:`sparsebench.resolve.resolve` into a complete RunConfig
and its ``run_id``; cells that resolve to the same run (dense at every density, since dense
fixes density 1.0) are one run. Every cell is validated before anything is submitted; an
invalid one raises :class:`CellError`, naming the cell and the field.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import distributed
from ..storage import paths
from ..config.schema import ConfigError, RunConfig, flat_config, parse_dataclass, run_id
from ..config.files import load_yaml, parse_override, set_dotted
from ..resolve import resolve
from .slurm_spec import SlurmSpec

@dataclass
class SweepSpec:
    """A parsed sweep file (values not yet applied)."""

    name: str = field(default="", metadata={"help": "the file's stem"})
    description: str = ""
    extends: str | None = field(default=None, metadata={
        "help": "a sweep (name or path) this one starts from; see merge_specs"})
    base: str | None = field(default=None, metadata={"help": "run config the cells start from"})
    overrides: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    include: list[dict] = field(default_factory=list)
    exclude: list[dict] = field(default_factory=list)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)


@dataclass
class Cell:
    """One run of a sweep: the values that define it and its resolved config."""

    label: dict                # the grid values (or the include entry) that define the cell
    config: RunConfig
    run_id: str
    aliases: list[dict] = field(default_factory=list)  # labels of cells that are the same run

    def describe(self) -> str:
        text = format_label(self.label)
        if self.aliases:
            text += f" (same run as {len(self.aliases)} more cell{'s' * (len(self.aliases) > 1)})"
        return text


@dataclass
class Sweep:
    spec: SweepSpec
    path: Path
    cells: list[Cell]          # unique runs, in grid order then include order
    n_cells: int               # grid cells (after exclude) plus include cells, duplicates included

    @property
    def name(self) -> str:
        return self.spec.name


class CellError(ConfigError):
    """An invalid cell: ``str()`` names the cell (its grid values) before the field, and after
    the message where the offending value came from when that is not the cell itself."""

    def __init__(self, label: dict, err: ConfigError, origin: str = ""):
        ValueError.__init__(self, f"cell {format_label(label)}: {err}" + (f" ({origin})" if origin else ""))
        self.field = err.field
        self.label = label


def _touches(key: str, field_name: str) -> bool:
    return field_name == key or field_name.startswith(key + ".") or key.startswith(field_name + ".")


def _origin(field_name: str, label: dict, spec: SweepSpec, cli: dict) -> str:
    """Which layer set the invalid field: the command line, the cell, the overrides or the base."""
    if any(_touches(str(k), field_name) for k in cli):
        return "set on the command line: " + ", ".join(f"{k}={v}" for k, v in cli.items()
                                                       if _touches(str(k), field_name))
    if any(_touches(str(k), field_name) for k in label):
        return ""
    if any(_touches(str(k), field_name) for k in spec.overrides):
        return "set in overrides"
    return f"from the base config {spec.base}" if spec.base else ""


# ---------------------------------------------------------------------------------------------
# finding and parsing a sweep file

def available() -> list[str]:
    return paths.resource_names("sweeps")


def find(name_or_path: str) -> Path:
    """``fmnist_smoke`` -> sweeps/fmnist_smoke.yaml (the user's folders first, then the built-in
    one: :func:`sparsebench.storage.paths.find_resource`); a path to a YAML file is taken as it is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError("", f"sweep file not found: {path}")
        return path
    found = paths.find_resource("sweeps", f"{name_or_path}.yaml")
    if found is None:
        looked = ", ".join(map(str, paths.search_dirs("sweeps"))) or "no sweeps folder"
        raise ConfigError("", f"no sweep named {name_or_path!r} (looked in {looked}); "
                              f"available: {', '.join(available()) or 'none'}")
    return found


def merge_specs(parent: dict, child: dict) -> dict:
    """``child`` applied on ``parent`` (two sweep dicts): ``grid`` and ``slurm`` by key (a grid
    key set to null is dropped), ``overrides`` by dotted key (nested sections are merged),
    ``include`` and ``exclude`` replaced when the child gives them, everything else (name,
    description, base) taken from the child where it sets it."""
    out = copy.deepcopy(parent)
    for key, value in child.items():
        if key in ("grid", "slurm") and isinstance(value, dict):
            merged = dict(out.get(key) or {})
            merged.update(copy.deepcopy(value))
            out[key] = {k: v for k, v in merged.items() if v is not None}
        elif key == "overrides" and isinstance(value, dict):
            merged = copy.deepcopy(out.get(key) or {})
            apply_values(merged, value)
            out[key] = merged
        else:
            out[key] = copy.deepcopy(value)
    out.pop("extends", None)
    return out


def load_spec_dict(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A sweep file as a plain dict, with its ``extends`` chain applied."""
    data = load_yaml(path)
    parent_name = data.get("extends")
    if parent_name is None:
        return data
    if not isinstance(parent_name, str) or not parent_name:
        raise ConfigError("extends", f"got {parent_name!r}; allowed: the name of a sweep "
                                     f"({', '.join(available())}) or a path to one")
    parent_path = find(parent_name)
    if parent_path.resolve() in _seen or parent_path.resolve() == path.resolve():
        raise ConfigError("extends", f"{parent_name!r} extends {path.stem!r} again (a cycle)")
    parent = load_spec_dict(parent_path, _seen + (path.resolve(),))
    return merge_specs(parent, data)


def parse(path: Path) -> SweepSpec:
    """Read and check a sweep file's structure (cells are checked by :func:`expand`)."""
    spec = parse_dataclass(SweepSpec, load_spec_dict(path))
    if not spec.name:
        raise ConfigError("name", f"missing; it must be the file's stem ({path.stem!r})")
    if not paths.is_safe_name(spec.name):
        raise ConfigError("name", f"got {spec.name!r}; allowed: {paths.NAME_RULE} "
                                  "(results go to results/<name>)")
    if spec.name != path.stem:
        raise ConfigError("name", f"got {spec.name!r}; it must equal the file's stem {path.stem!r} "
                                  "(results go to results/<name>)")
    for key, values in spec.grid.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"grid.{key}", "a grid key must be a field name such as density")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}", f"expected a non-empty list of values, got {values!r} "
                                             "(a single value belongs in overrides)")
        if key == TOGETHER and not all(isinstance(v, dict) and v for v in values):
            raise ConfigError(f"grid.{key}", "expected a list of non-empty mappings of fields "
                                             "set together (e.g. {model.width: 2, density: 0.01})")
    for kind in ("include", "exclude"):
        for i, entry in enumerate(getattr(spec, kind)):
            if not entry:
                raise ConfigError(f"{kind}[{i}]", "expected a non-empty mapping of field: value")
    if not spec.grid and not spec.include:
        raise ConfigError("grid", "the sweep has no cells: give grid values or include cells")
    spec.slurm.check()
    for source in ("overrides", "grid", "include", "exclude"):
        entries = getattr(spec, source)
        for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            if any(k == "sweep" or str(k).startswith("sweep.") for k in entry):
                where = f"{source}[{i}]" if source in ("include", "exclude") else source
                raise ConfigError(f"{where}.sweep", "set from the sweep's name, not per cell")
    return spec


def base_path(spec: SweepSpec, sweep_path: Path) -> Path | None:
    """The base config: relative to the sweep file's folder, else by name among the configs
    folders (``configs/NAME.yaml``: the user's, then the built-in one)."""
    if spec.base is None:
        return None
    base = Path(spec.base)
    if base.is_absolute():
        return base
    if (sweep_path.parent / base).is_file():
        return sweep_path.parent / base
    return paths.config_file(base)


# ---------------------------------------------------------------------------------------------
# applying values and expanding cells

# A grid key whose values are mappings of fields set together: one grid axis over paired values
# (``together: [{model.width: 2, density: 0.0049}, {model.width: 4, density: 0.0012}]``).
TOGETHER = "together"


def apply_values(data: dict, values: dict) -> None:
    """Apply one cell's (or the overrides') values to a plain config dict, in place."""
    for key, value in values.items():
        key = str(key)
        if key == TOGETHER and isinstance(value, dict):
            apply_values(data, value)  # fields that vary together, e.g. a width and its density
        elif isinstance(value, dict) and key != "method" and not key.startswith("method."):
            # A section given as a mapping sets the fields it names and keeps the others.
            apply_values(data, {f"{key}.{sub}": v for sub, v in value.items()})
        elif key == "method":
            data["method"] = {"name": value} if isinstance(value, str) else copy.deepcopy(value)
        else:
            set_dotted(data, key, copy.deepcopy(value))


def format_label(label: dict) -> str:
    return yaml.safe_dump(label, default_flow_style=True, sort_keys=False, width=10**9).strip()


_MISSING = object()


def _default_of(dotted: str) -> Any:
    """The RunConfig default of a dotted field, or _MISSING (method parameters, unknown keys)."""
    cls: Any = RunConfig
    value: Any = _MISSING
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls):
            return _MISSING
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return _MISSING
        f = fields[part]
        value = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else _MISSING)
        cls = typing.get_type_hints(cls)[part]
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def _lookup(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _default_of(dotted)
        node = node[part]
    return node


def _matches(data: dict, entry: dict) -> bool:
    """Whether a (pre-resolution) cell dict has every value an exclude entry names."""
    for key, want in entry.items():
        if isinstance(want, dict):
            if not _matches(data, {f"{key}.{k}": v for k, v in want.items()}):
                return False
        elif _lookup(data, str(key)) != want:
            return False
    return True


def _top_level_commas(raw: str) -> list[str] | None:
    """``a,b,c`` -> the pieces; None when there is no comma outside brackets and quotes."""
    pieces, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(raw):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            pieces.append(raw[start:i])
            start = i + 1
    return pieces + [raw[start:]] if pieces else None


def split_overrides(texts: list[str]) -> tuple[list, list, list]:
    """Command-line ``key=value`` overrides of a sweep, in three kinds: grid axes
    (``density=0.1,0.05``: a comma outside brackets and quotes), ``slurm.*`` settings, and
    values for every cell. Each as ``(key, value)`` pairs, values parsed as YAML."""
    grid, slurm, cells = [], [], []
    for text in texts:
        key, value = parse_override(text)
        pieces = _top_level_commas(text.split("=", 1)[1])
        if key == "slurm" or key.startswith("slurm."):
            if pieces is not None:
                raise ConfigError(key, "one value (a SLURM setting is the sweep's, not a grid axis)")
            slurm.append((key, value))
        elif pieces is not None:
            if any(not p.strip() for p in pieces):
                raise ConfigError(key, f"an empty value in the grid {text!r} (write a,b,c)")
            grid.append((key, [parse_override(f"{key}={p}")[1] for p in pieces]))
        else:
            cells.append((key, value))
    return grid, slurm, cells


def expand(name_or_path: str, overrides: list[str] = ()) -> Sweep:
    """Parse a sweep, apply every cell and resolve it; raises ConfigError/CellError."""
    path = find(name_or_path)
    spec = parse(path)
    base_file = base_path(spec, path)
    try:
        base = load_yaml(base_file) if base_file is not None else {}
    except ConfigError as err:
        raise ConfigError("base", str(err)) from None
    start = copy.deepcopy(base)
    apply_values(start, spec.overrides)
    grid_cli, slurm_cli, cli = split_overrides(overrides)
    for key, _ in cli + grid_cli:
        if key == "sweep" or key.startswith("sweep."):
            raise ConfigError(key, "the sweep's name sets it; it cannot be overridden")
    if slurm_cli:
        spec.slurm = spec.slurm.overridden(slurm_cli)
    # `key=a,b,c` on the command line: an axis of the grid, replacing the file's axis of the
    # same key or added after the others (Hydra's multirun).
    spec.grid = {**spec.grid, **dict(grid_cli)}

    labels: list[dict] = []
    keys = list(spec.grid)
    used = [False] * len(spec.exclude)
    for combo in itertools.product(*(spec.grid[k] for k in keys)) if keys else ():
        label = dict(zip(keys, combo))
        data = copy.deepcopy(start)
        apply_values(data, label)
        hits = [i for i, entry in enumerate(spec.exclude) if _matches(data, entry)]
        for i in hits:
            used[i] = True
        if not hits:
            labels.append(label)
    for i, was_used in enumerate(used):
        if not was_used:
            raise ConfigError(f"exclude[{i}]", f"{format_label(spec.exclude[i])} matches no grid "
                                               "cell (a misspelt key or value?)")
    labels += [dict(entry) for entry in spec.include]

    cells: dict[str, Cell] = {}
    for label in labels:
        data = copy.deepcopy(start)
        apply_values(data, label)
        apply_values(data, dict(cli))
        data["sweep"] = spec.name
        data["progress"] = False  # the sweep shows one bar over all cells instead
        try:
            cfg = resolve(data)
            # A data-parallel run's needs (global batch divisible by its ranks) are checked
            # here, before anything is submitted.
            distributed.validate(cfg, spec.slurm.world_size)
        except ConfigError as err:
            raise CellError(label, err, _origin(err.field, label, spec, dict(cli))) from None
        rid = run_id(cfg)
        if rid in cells:
            cells[rid].aliases.append(label)
        else:
            cells[rid] = Cell(label, cfg, rid)
    return Sweep(spec, path, list(cells.values()), len(labels))


# ---------------------------------------------------------------------------------------------
# describing cells in tables

def row_labels(cells: list[Cell]) -> dict[str, str]:
    """A short row name per run for method x density tables: other fields that vary across the
    sweep (model, width...), the method, and the parameters that tell its variants apart.
    Density and seed are left out (the table's columns and what it averages over), and so is
    whatever the method alone decides (its default distribution): only fields that vary among
    the runs of one method name count."""
    flats = {c.run_id: flat_config(c.config) for c in cells}
    by_method: dict[str, list[dict]] = {}
    for cell in cells:
        by_method.setdefault(cell.config.method.name, []).append(flats[cell.run_id])
    labels = {}
    for cell in cells:
        flat, same = flats[cell.run_id], by_method[cell.config.method.name]
        keys = sorted({k for f in same for k in f} - {"density", "seed", "method.name"})
        varying = [k for k in keys if len({repr(f.get(k)) for f in same}) > 1]
        other = " ".join(f"{k.removesuffix('.name')}={flat.get(k)}"
                         for k in varying if not k.startswith("method."))
        params = ", ".join(f"{k[len('method.'):]}={flat.get(k)}"
                           for k in varying if k.startswith("method."))
        text = cell.config.method.name + (f" ({params})" if params else "")
        labels[cell.run_id] = f"{other} {text}" if other else text
    return labels
