"""What a miniature cell is (:mod:`sparsebench.paper.mini`): ``sweeps/mini/common.yaml`` (and
``tiny.yaml``) parsed as a :class:`MiniSpec`, and a full paper sweep turned cell by cell into its
miniature (:func:`derive`): stand-in data, smaller models, scaled epochs, one seed, the methods'
shorter schedules, every change recorded for the report's preamble."""
from __future__ import annotations

import copy
import functools
from collections import defaultdict
from dataclasses import dataclass, field

import yaml

from ..storage import paths
from ..launch import spec as sweep_spec
from ..config.schema import ConfigError, flat_config, to_dict
from ..config.files import load_yaml, set_dotted
from .names import MODELS, Names

UNHASHED = ("sweep", "progress")


@dataclass
class MiniSpec:
    """sweeps/mini/common.yaml (and tiny.yaml) parsed."""

    data: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    epochs_scale: float = 0.01
    min_epochs: int = 2
    seeds: list = field(default_factory=lambda: [0])
    overrides: dict = field(default_factory=dict)
    method_params: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)
    keep_in: dict = field(default_factory=dict)
    kernels: list = field(default_factory=list)

    @classmethod
    def load(cls, tiny: bool = False) -> "MiniSpec":
        data = load_yaml(paths.paper_overlays_dir() / "common.yaml")
        if tiny:
            data.update(load_yaml(paths.paper_overlays_dir() / "tiny.yaml"))
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(unknown[0], "unknown key of sweeps/mini/common.yaml; allowed: "
                              + ", ".join(cls.__dataclass_fields__))
        return cls(**data)

    def sizes(self, dataset: str) -> tuple[int, int]:
        """(training, test) images of a stand-in data set (sweeps/mini/common.yaml)."""
        sizes = self.data.get(dataset) or {}
        return int(sizes.get("train", 2048)), int(sizes.get("test", 500))

    def stand_in(self, dataset: str) -> str:
        return (self.data.get(dataset) or {}).get("as", dataset)

    def paper_keys(self, keys: dict) -> dict:
        """A miniature cell's keys -> those of the full cell it stands for (model, width and
        epochs undone), to find the paper's number for orientation."""
        out = dict(keys)
        inverse = {v.get("name", k): (k, v.get("width", 1.0)) for k, v in self.models.items()}
        model, scale = inverse.get(keys.get("model"), (keys.get("model"), 1.0))
        out["model"] = model
        if "width" in keys:
            out["width"] = float(f"{keys['width'] / scale:.6g}")
        if "epochs" in keys:
            out["epochs"] = round(keys["epochs"] / self.epochs_scale)
        return out

    def names(self) -> Names:
        return Names({k: v["label"] for k, v in self.data.items()
                      if "label" in v and "as" not in v})


@functools.lru_cache(maxsize=None)
def _weights(model: str, dataset: str, width: float) -> int:
    from .width import prunable_weights

    return prunable_weights(model, dataset, width)


def _keep(flat: dict, keep: dict) -> bool:
    return all(key not in flat or flat[key] in allowed for key, allowed in keep.items())


def mini_config(full: dict, spec: MiniSpec) -> tuple[dict, dict]:
    """The miniature of one resolved full config (a plain dict), and {field: (full, mini)}."""
    cfg = copy.deepcopy(full)
    for key in UNHASHED:
        cfg.pop(key, None)
    changes = {}
    model, width, density = cfg["model"]["name"], float(cfg["model"]["width"]), cfg["density"]
    to = spec.models.get(model, {})
    cfg["model"]["name"] = to.get("name", model)
    cfg["model"]["width"] = float(f"{width * to.get('width', 1.0):.6g}")
    dataset = spec.stand_in(cfg["data"]["name"])
    if density < 1 and width != 1:
        # Keep this cell's active connections as a multiple of the ×1 model's (figure 3).
        full_ref = _weights(model, cfg["data"]["name"], 1.0) / _weights(model, cfg["data"]["name"], width)
        mini_ref = (_weights(cfg["model"]["name"], dataset, to.get("width", 1.0))
                    / _weights(cfg["model"]["name"], dataset, cfg["model"]["width"]))
        cfg["density"] = float(f"{density / full_ref * mini_ref:.5g}")
    cfg["data"]["name"] = dataset
    cfg["epochs"] = max(spec.min_epochs, round(cfg["epochs"] * spec.epochs_scale))
    cfg["optim"]["warmup_epochs"] = float(cfg["optim"]["warmup_epochs"]) * spec.epochs_scale
    for key, value in spec.overrides.items():
        set_dotted(cfg, key, value)
    cfg["method"].update(spec.method_params.get(cfg["method"]["name"], {}))
    changes["data"] = (full["data"]["name"], dataset)
    changes["model"] = (f"{MODELS.get(model, model)} ×{width:g}",
                        f"{MODELS.get(cfg['model']['name'], cfg['model']['name'])} "
                        f"×{cfg['model']['width']:g}")
    changes["epochs"] = (full["epochs"], cfg["epochs"])
    if cfg["density"] != density:
        changes["density"] = (density, cfg["density"])
    for name in spec.method_params.get(full["method"]["name"], {}):  # every one it changes
        if name in full["method"] and full["method"][name] != cfg["method"][name]:
            changes[f"{full['method']['name']} {name}"] = (_hashable(full["method"][name]),
                                                            _hashable(cfg["method"][name]))
    return cfg, changes


def _hashable(value):
    """A parameter's value as a change record holds it (a list as its text)."""
    return str(value) if isinstance(value, list) else value


@dataclass
class Derived:
    name: str
    spec: dict
    full_runs: int
    changes: dict  # field -> {(full, mini), ...}


def derive(name: str, spec: MiniSpec) -> Derived:
    full = sweep_spec.expand(name)
    include, seen, changes = [], set(), defaultdict(set)
    for cell in full.cells:
        flat = flat_config(cell.config)
        if cell.config.seed not in spec.seeds or not _keep(flat, spec.keep_in.get(name, spec.keep)):
            continue
        cfg, changed = mini_config(to_dict(cell.config), spec)
        key = yaml.safe_dump(cfg, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        include.append(cfg)
        for k, v in changed.items():
            changes[k].add(v)
    changes["seeds"] = {(", ".join(map(str, sorted({c.config.seed for c in full.cells}))),
                         ", ".join(map(str, spec.seeds)))}
    out = {"name": name,
           "description": f"miniature of {name} (derived by sparsebench.paper.mini; not for "
                          f"comparison with the paper): {full.spec.description}",
           "include": include,
           "slurm": {"time_min": 10, "cpus_per_task": 1, "mem_gb": 3, "array_parallelism": 2}}
    return Derived(name, out, len(full.cells), dict(changes))
