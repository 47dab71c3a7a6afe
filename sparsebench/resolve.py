"""YAML + overrides -> one complete, validated :class:`RunConfig`.

This is where names are checked against the registries (models, data sets, methods) and
where a method's parameters are checked against its own dataclass. Everything that needs
filling in is filled in here (the protocol's settings, :mod:`sparsebench.protocols`; the
method's default distribution, a fixed density), so the
resolved config hashes to a stable ``run_id`` and is written out as the run's config.yaml.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from . import methods, models, protocols
from .config.schema import ConfigError, RunConfig, from_dict, parse_dataclass
from .config.files import apply_overrides, load_yaml
from .data import DATASETS


def resolve(data: dict) -> RunConfig:
    cfg = from_dict(protocols.apply(data))  # the protocol fills in what the config leaves unset
    if cfg.data.name not in DATASETS:
        raise ConfigError("data.name", f"got {cfg.data.name!r}; allowed: {', '.join(DATASETS)}")
    if cfg.model.name not in models.available():
        raise ConfigError("model.name", f"got {cfg.model.name!r}; allowed: {', '.join(models.available())}")
    for argument in cfg.model.arguments():
        if not models.accepts(cfg.model.name, argument):
            takes = [m for m in models.available() if models.accepts(m, argument)]
            raise ConfigError(f"model.{argument}", f"model {cfg.model.name!r} takes no {argument}; "
                                                   f"allowed for: {', '.join(takes)} (or null)")
    method_cls = methods.get(cfg.method.name)  # ConfigError on method.name, naming the files
    try:
        params = parse_dataclass(method_cls.Params, cfg.method.params, "method.")
    except ConfigError as err:
        if "unknown field" in str(err):
            allowed = ", ".join(["name"] + [f.name for f in dataclasses.fields(method_cls.Params)])
            raise ConfigError(err.field, f"not a parameter of method {cfg.method.name!r}; "
                              f"allowed: {allowed}") from None
        raise
    if cfg.sparsity.engine not in method_cls.engines:
        raise ConfigError("sparsity.engine", f"got {cfg.sparsity.engine!r}; method "
                          f"{cfg.method.name!r} allows: {', '.join(method_cls.engines)} (it needs "
                          "dense gradients or weights)")
    method_cls.validate(params, cfg)
    cfg.method.params = dataclasses.asdict(params)
    if method_cls.fixed_density is not None:
        cfg.density = method_cls.fixed_density
    if cfg.sparsity.distribution == "auto":
        cfg.sparsity.distribution = method_cls.default_distribution
    return cfg


def load(path: str | Path | None = None, overrides: list[str] | dict = ()) -> RunConfig:
    """The resolved config of a YAML file (or the defaults) with ``key=value`` overrides."""
    data = load_yaml(path) if path is not None else {}
    return resolve(apply_overrides(data, overrides))
