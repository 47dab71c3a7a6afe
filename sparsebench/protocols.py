"""Named protocols: which settings a run takes where its config leaves them unset.

A method's own defaults (its parameter dataclass, its default distribution) are its own
paper's protocol: ``protocol: own``, the default. Another protocol is a file
``protocols/NAME.yaml``::

    name: gse_paper                # must equal the file's stem
    description: one line
    run:                           # run-level fields, dotted or nested
      sparsity.distribution: er_flat
      amp: false
    methods:                       # every method the protocol can run, with its parameters
      static: {}                   # {}: the method's own defaults
      rigl: {scope: global, interval: 1000}
      topkast:                     # a method's own run-level fields go under `run`
        run: {sparsity.init: model, optim.warmup_epochs: 0}
        penalty: norm

A config or sweep names it with ``protocol: NAME``. :func:`apply` (called by
:func:`sparsebench.resolve.resolve`) puts the protocol *beneath* the config: a field the config
sets wins (``auto`` counts as unset), every other field takes the method's ``run`` value, else
the protocol's ``run`` value, and only then do the method's own defaults fill what is left.
(``run`` is therefore not a name a method's parameter can have.) The resolved config records
``protocol``, so config.yaml and result.json say which protocol a run used, and
``python -m sparsebench.sweep NAME --dry-run`` prints each run's resolved parameters
(:func:`describe`). A method the protocol does not list is an error: joining a protocol is
one line of YAML, and a run never silently falls back to other defaults.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import methods
from .storage import paths
from .config.schema import ConfigError, MethodConfig, from_dict, parse_dataclass, to_dict
from .config.files import load_yaml, set_dotted

OWN = "own"
UNSET = "auto"   # a value that defers to the protocol


METHOD_RUN = "run"   # the key of a method's own run-level fields in its protocol entry


@dataclass
class Protocol:
    name: str = ""
    description: str = ""
    run: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)
    method_run: dict = field(default_factory=dict)   # method -> its run-level fields (flat)


def available() -> list[str]:
    return sorted([OWN] + paths.resource_names("protocols"))


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@lru_cache(maxsize=16)
def _load(path: Path, version: tuple[int, int]) -> Protocol:
    name = path.stem
    where = f"protocols/{name}.yaml"
    try:
        raw = load_yaml(path)
        if "method_run" in raw:   # filled from each method's `run:` entry, not a key of the file
            raise ConfigError("method_run", "unknown field; a method's run-level fields go under "
                                            "methods.NAME.run")
        spec = parse_dataclass(Protocol, raw)
    except ConfigError as err:
        raise ConfigError("protocol", f"{where}: {err}") from None
    if spec.name != name:
        raise ConfigError("protocol", f"{where}: name {spec.name!r} must equal the file's stem {name!r}")
    spec.run = _run_fields(spec.run, f"{where}: run")
    for method, params in spec.methods.items():
        if method not in methods.available():
            raise ConfigError("protocol", f"{where}: methods.{method}: no such method; "
                                          f"allowed: {', '.join(methods.available())}")
        if not isinstance(params, dict):
            raise ConfigError("protocol", f"{where}: methods.{method}: expected a mapping of its "
                                          f"parameters ({{}} for its own defaults), got {params!r}")
        params = dict(params)
        run = params.pop(METHOD_RUN, None)
        if not isinstance(run, (dict, type(None))):
            raise ConfigError("protocol", f"{where}: methods.{method}.{METHOD_RUN}: expected a "
                                          f"mapping of run-level fields, got {run!r}")
        spec.method_run[method] = _run_fields(run or {}, f"{where}: methods.{method}.{METHOD_RUN}")
        spec.methods[method] = params
        try:
            parse_dataclass(methods.get(method).Params, params, f"methods.{method}.")
        except ConfigError as err:
            raise ConfigError("protocol", f"{where}: {err}") from None
    return spec


def _run_fields(run: dict, where: str) -> dict:
    """Run-level fields (flattened), validated as a config's would be."""
    run = _flatten(run)
    for key in run:
        if key in ("protocol", "sweep", "method") or key.startswith("method."):
            raise ConfigError("protocol", f"{where}.{key}: method parameters go under methods")
    try:
        data: dict = {}
        for key, value in run.items():
            set_dotted(data, key, value)
        from_dict(data)
    except ConfigError as err:
        raise ConfigError("protocol", f"{where}.{err}") from None
    return run


def load(name: str) -> Protocol | None:
    """The protocol ``name`` (None for ``own``); raises ConfigError naming ``protocol``."""
    if not isinstance(name, str):
        raise ConfigError("protocol", f"expected a protocol name, got {name!r}")
    if name == OWN:
        return None
    path = paths.find_resource("protocols", f"{name}.yaml") if paths.is_safe_name(name) else None
    if path is None:
        raise ConfigError("protocol", f"got {name!r}; allowed: {', '.join(available())}")
    stat = path.stat()   # the cache key: a changed file is read again
    return _load(path, (stat.st_mtime_ns, stat.st_size))


def _lookup(data: dict, dotted: str):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return UNSET
        node = node[part]
    return node


def apply(data: dict) -> dict:
    """``data`` (a raw config dict) with its protocol's settings filled in beneath it."""
    protocol = load(data.get("protocol", OWN))
    if protocol is None:
        return data
    out = copy.deepcopy(data)
    method = out.get("method", {})
    method = {"name": method} if isinstance(method, str) else dict(method or {})
    name = method.get("name", MethodConfig.name)
    run = dict(protocol.run)
    if isinstance(name, str):
        if name not in protocol.methods:
            raise ConfigError("method.name", f"protocol {protocol.name!r} has no entry for method "
                                             f"{name!r}; add one under methods in "
                                             f"protocols/{protocol.name}.yaml ({{}} keeps its own "
                                             f"defaults); it lists: {', '.join(protocol.methods)}")
        out["method"] = {"name": name, **copy.deepcopy(protocol.methods[name]),
                         **{k: v for k, v in method.items() if k != "name"}}
        run.update(protocol.method_run.get(name, {}))   # the method's own beat the protocol's
    for key, value in run.items():
        if _lookup(out, key) == UNSET:
            set_dotted(out, key, copy.deepcopy(value))
    return out


# ---- describing what runs get ---------------------------------------------------------------

RUN_FIELDS = ("sparsity.distribution", "sparsity.init", "amp", "tf32", "cudnn_benchmark",
              "optim.warmup_epochs", "optim.weight_decay", "optim.decay_norm_and_bias")


def describe(cells) -> list[str]:
    """One line per distinct resolved method setting among a sweep's cells: the protocol, the
    method with every parameter, the run-level settings a protocol sets, and how many runs."""
    rows: dict[tuple, int] = {}
    for cell in cells:
        cfg = cell.config
        flat = _flatten(to_dict(cfg))
        params = " ".join(f"{k}={_fmt(v)}" for k, v in cfg.method.params.items())
        run = " ".join(f"{k}={_fmt(flat[k])}" for k in RUN_FIELDS)
        key = (cfg.protocol, f"{cfg.method.name}: {params}" if params else cfg.method.name, run)
        rows[key] = rows.get(key, 0) + 1
    lines = []
    for (protocol, method, run), n in rows.items():
        lines.append(f"  [{protocol}] {method} | {run} | {n} run{'s' * (n != 1)}")
    return lines


def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


