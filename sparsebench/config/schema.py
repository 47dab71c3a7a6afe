"""Typed run configuration: one dataclass per group, each field validated where it is declared.

Every field carries its own validation (``choices`` or a ``check``) beside its default, so the
error for a bad value names the field and what is allowed. Invalid input raises
:class:`ConfigError`; the command-line tools turn it into one line on stderr and exit code 2.

Method parameters are not known here (methods are plug-ins): ``method`` holds the name and a
raw dict, and :mod:`sparsebench.resolve` checks them against the method's own dataclass.
Reading the YAML files and the ``key=value`` overrides is :mod:`sparsebench.config.files`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from ..storage.paths import NAME_RULE, is_safe_name


class ConfigError(ValueError):
    """An invalid configuration value. ``field`` is the dotted name of the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


def choice(default: Any, choices: tuple, help: str = "") -> Any:
    return field(default=default, metadata={"choices": choices, "help": help})


def checked(default: Any, check: Callable[[Any], bool], allowed: str, help: str = "") -> Any:
    """A field whose value must satisfy ``check``; ``allowed`` describes valid values in words."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kw, metadata={"check": check, "allowed": allowed, "help": help})


def positive(default: Any, help: str = "") -> Any:
    return checked(default, lambda v: v > 0, "a number > 0", help)


def non_negative(default: Any, help: str = "") -> Any:
    return checked(default, lambda v: v >= 0, "a number >= 0", help)


def fraction(default: Any, help: str = "", *, open_low: bool = True) -> Any:
    if open_low:
        return checked(default, lambda v: 0 < v <= 1, "a number in (0, 1]", help)
    return checked(default, lambda v: 0 <= v <= 1, "a number in [0, 1]", help)


@dataclass
class DataConfig:
    name: str = field(default="fashion_mnist", metadata={"help": "data set name"})
    batch_size: int = positive(128, "training batch size")
    test_batch_size: int = positive(1000, "evaluation batch size")
    augment: bool | None = field(default=None, metadata={"help": "None: the data set's default"})
    root: str | None = field(default=None, metadata={"help": "the data set's folder; None: search"})
    train_subset: int | None = checked(None, lambda v: v is None or v > 0, "null or an integer > 0",
                                       "keep only the first N training examples (smoke tests)")
    pad_value: str = choice("black", ("black", "mean"),
                            "the random crop's padding: black, a black raw pixel normalized "
                            "((0 - mean) / std, as torchvision); mean, the data set's mean colour")
    validation: int | None = checked(None, lambda v: v is None or v > 0, "null or an integer > 0",
                                     "hold N training examples out as a validation set (the same "
                                     "for every run of a seed); best_* are chosen on it")


@dataclass
class ModelConfig:
    name: str = field(default="mlp", metadata={"help": "model name (see sparsebench.models)"})
    width: float = positive(1.0, "width multiplier of every layer")
    hidden: list[int] | None = checked(None, lambda v: len(v) > 0 and all(h > 0 for h in v),
                                       "null or a non-empty list of integers > 0",
                                       "the MLP's hidden layer sizes at width 1 (e.g. [512, 512]); "
                                       "null: the model's own ([300, 100])")

    def arguments(self) -> dict:
        """The model-specific keyword arguments of ``models.build_model``."""
        return {} if self.hidden is None else {"hidden": tuple(self.hidden)}


@dataclass
class OptimConfig:
    name: str = choice("sgd", ("sgd", "adamw"), "optimizer")
    lr: float = positive(0.1, "peak learning rate")
    momentum: float = checked(0.9, lambda v: 0 <= v < 1, "a number in [0, 1)", "SGD momentum")
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = non_negative(5e-4)
    decay_norm_and_bias: bool = field(default=True, metadata={
        "help": "apply weight decay to 1-D parameters (biases, norm scales) too"})
    schedule: str = choice("cosine", ("cosine", "step", "constant"), "learning-rate schedule")
    warmup_epochs: float = non_negative(0.0, "linear warm-up from 0, in epochs")
    milestones: list[float] = checked(lambda: [0.5, 0.75], lambda v: all(0 < m < 1 for m in v),
                                      "fractions of training in (0, 1)", "step schedule drops")
    gamma: float = positive(0.1, "step schedule factor")
    label_smoothing: float = checked(0.0, lambda v: 0 <= v < 1, "a number in [0, 1)")


@dataclass
class SparsityConfig:
    distribution: str = choice("auto", ("auto", "uniform", "er", "er_flat", "erk"),
                               "layer-wise density; auto: the protocol's, else the method's default")
    init: str = choice("model", ("model", "active_fan_in"),
                       "weights of prunable layers: the model's own init, masked; or redrawn from "
                       "U(±√(3/active fan-in)) per output unit (the GSE authors')")
    dense_first_layer: bool = False
    dense_last_layer: bool = False
    engine: str = choice("masked", ("masked", "sparse"), "masked-dense or always-sparse execution")


@dataclass
class MethodConfig:
    name: str = "static"
    params: dict = field(default_factory=dict)


@dataclass
class WandbConfig:
    project: str | None = field(default=None, metadata={
        "help": "Weights & Biases project; null: no W&B (needs the wandb package)"})
    entity: str | None = field(default=None, metadata={"help": "W&B team or user; null: yours"})
    mode: str = choice("online", ("online", "offline", "disabled"), "W&B mode (offline: a local "
                       "run folder under the run's, synced later with `wandb sync`)")


@dataclass
class MlflowConfig:
    tracking_uri: str | None = field(default=None, metadata={
        "help": "MLflow tracking URI or a folder for a file store; null: no MLflow "
                "(needs the mlflow or mlflow-skinny package)"})
    experiment: str = field(default="sparsebench", metadata={"help": "MLflow experiment name"})


@dataclass
class TrackingConfig:
    tensorboard: bool = field(default=True, metadata={
        "help": "TensorBoard event files in the run folder"})
    step_interval: int = checked(50, lambda v: v >= 0, "an integer >= 0 (0: no per-step rows)",
                                 "per-step metrics (steps.jsonl) every this many steps")
    topology: bool = field(default=True, metadata={
        "help": "per-update prune/grow counts and the in-time over-parameterization rate "
                "(topology.jsonl)"})
    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass
class RunConfig:
    sweep: str = checked("adhoc", is_safe_name, NAME_RULE,
                         "sweep the run belongs to (its folder under the results root)")
    protocol: str = field(default="own", metadata={
        "help": "a file in protocols/ whose settings fill in what the config leaves unset "
                "(gse_paper: the GSE paper's protocol); own: each method's own defaults"})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    density: float = fraction(0.1, "target fraction of nonzero prunable weights")
    epochs: int = positive(10)
    seed: int = checked(0, lambda v: v >= 0, "an integer >= 0")
    device: str = choice("auto", ("auto", "cpu", "cuda"))
    # Precision and memory format (sparsebench.training.precision); each works on the CPU too.
    amp: bool | str = choice("auto", ("auto", "bf16", False),
                             "autocast: auto = bf16 on CUDA, none on the CPU; bf16 on any device")
    tf32: bool = field(default=False, metadata={"help": "TF32 matmuls and cuDNN convs (CUDA)"})
    cudnn_benchmark: bool = field(default=False, metadata={"help": "cuDNN autotuner (CUDA)"})
    channels_last: bool | str = choice("auto", ("auto", True, False),
                                       "image models and batches channels-last: auto = on CUDA")
    # torch.compile of the training step's forward and backward (sparsebench.training.compile)
    compile: bool | str = choice(False, (False, True, "auto"),
                                 "torch.compile the training steps: auto = on CUDA for runs of at "
                                 "least training.compile.AUTO_MIN_STEPS steps")
    compile_backend: str = choice("inductor", ("inductor", "aot_eager", "eager"),
                                  "torch.compile backend (aot_eager/eager: tracing checks only)")
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    save_final: bool = field(default=True, metadata={
        "help": "keep the trained weights and masks in final.pt (false: huge sweeps)"})


# Fields that do not change what a run computes, so they stay out of its run_id.
UNHASHED_FIELDS = ("sweep", "progress", "tracking", "save_final")
# Fields added after results existed: left out of the hash while at their default, so every
# earlier run keeps its run_id (and a compiled run gets its own).
HASHED_UNLESS_DEFAULT = {"compile": False, "compile_backend": "inductor"}


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with validation

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(name, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(name, f"expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(name, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(name, f"expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        # YAML 1.1 (PyYAML) reads `1e-3` (no dot) as a string; accept it as the number it is.
        elif isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            number = float(value)
        if number is None:
            raise ConfigError(name, f"expected a number, got {value!r}")
        # `.inf`, `.nan` and `1e999` parse as floats but no setting means them.
        if not math.isfinite(number):
            raise ConfigError(name, f"got {value!r}; allowed: a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(name, f"expected a string, got {value!r}")
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(name, f"expected a mapping, got {value!r}")
    raise TypeError(f"unsupported config annotation {tp!r} for {name}")


def parse_dataclass(cls: type, data: Any, prefix: str = "") -> Any:
    """Build ``cls`` from a plain dict, validating every field; unknown keys are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip("."), f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(prefix + str(unknown[0]),
                          f"unknown field; allowed: {', '.join(sorted(fields))}")
    values = {}
    for name, f in fields.items():
        full = prefix + name
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = parse_dataclass(tp, data[name], full + ".")
            continue
        value = _coerce(data[name], tp, full)
        validate_field(f, value, full)
        values[name] = value
    return cls(**values)


def validate_field(f: dataclasses.Field, value: Any, full: str) -> None:
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        shown = (str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
        raise ConfigError(full, f"got {value!r}; allowed: {', '.join(shown)}")
    check = f.metadata.get("check")
    if check is not None and value is not None and not check(value):
        raise ConfigError(full, f"got {value!r}; allowed: {f.metadata['allowed']}")


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (lists for tuples) of a config dataclass, method params flattened in."""
    out = dataclasses.asdict(cfg)
    if isinstance(cfg, RunConfig):
        method = out.pop("method")
        out["method"] = {"name": method["name"], **method["params"]}
    return json.loads(json.dumps(out))  # tuples -> lists, a canonical plain structure


def flat_config(cfg: RunConfig) -> dict:
    """Dotted field -> value of a resolved config (method parameters as method.<param>)."""
    out: dict = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = tuple(node) if isinstance(node, list) else node

    walk("", {k: v for k, v in to_dict(cfg).items() if k not in UNHASHED_FIELDS})
    return out


def from_dict(data: dict) -> RunConfig:
    """A RunConfig from a plain dict; the ``method`` section keeps its params raw."""
    data = dict(data or {})
    method = data.pop("method", {}) or {}
    if isinstance(method, str):
        method = {"name": method}
    if not isinstance(method, dict):
        raise ConfigError("method", f"expected a mapping with a name, got {method!r}")
    method = dict(method)
    name = method.pop("name", MethodConfig.name)
    if not isinstance(name, str):
        raise ConfigError("method.name", f"expected a string, got {name!r}")
    cfg = parse_dataclass(RunConfig, data)
    cfg.method = MethodConfig(name=name, params=method)
    return cfg


def run_id(cfg: RunConfig) -> str:
    """A stable id: hash of the fully resolved config (defaults included, see style.md)."""
    d = to_dict(cfg)
    for key in UNHASHED_FIELDS:
        d.pop(key, None)
    for key, default in HASHED_UNLESS_DEFAULT.items():
        if d.get(key, default) == default:
            d.pop(key, None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
