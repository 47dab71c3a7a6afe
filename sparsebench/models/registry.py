"""The model registry: family modules register their builders here, and
:func:`build_model` builds one by name. It knows no family itself; importing
:mod:`sparsebench.models` imports every family, so that all are registered."""


from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

__all__ = ["register", "available", "accepts", "build_model", "scaled"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator registering a model builder (class or function) under ``name``."""

    def decorator(builder):
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (
            builder.__module__,
            builder.__qualname__,
        ):
            raise ValueError(f"model name {name!r} is already registered to {old!r}")
        _REGISTRY[name] = builder
        return builder

    return decorator


def available() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_REGISTRY)


def accepts(name: str, argument: str) -> bool:
    """Whether the builder of model ``name`` takes the keyword ``argument`` (e.g. ``hidden``)."""
    return argument in inspect.signature(_REGISTRY[name]).parameters


def build_model(
    name: str,
    *,
    num_classes: int,
    in_shape: tuple[int, ...],
    width: float = 1.0,
    **kwargs,
) -> nn.Module:
    """Build the registered model ``name``.

    ``in_shape`` is the (C, H, W) shape of one input example; ``width``
    multiplies every hidden layer's units/channels. Extra keyword arguments
    are passed to the family's builder (e.g. ``hidden=`` for ``mlp``).
    Raises ``KeyError`` listing the available names if ``name`` is unknown.
    """
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; available models: {', '.join(available())}"
        ) from None
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return builder(num_classes=num_classes, in_shape=tuple(in_shape), width=width, **kwargs)


def scaled(n: int, width: float, multiple_of: int = 1) -> int:
    """``n * width`` rounded to a multiple of ``multiple_of``, at least ``multiple_of``."""
    return max(multiple_of, round(n * width / multiple_of) * multiple_of)


def init_convs_and_batchnorm(model: nn.Module, *, linear: bool = False) -> None:
    """He et al.'s initialization, as torchvision's ResNet and VGG do it: kaiming-normal
    (fan_out, ReLU) conv weights (and linear ones where ``linear``, with zero biases), and
    batch norm at weight 1, bias 0."""
    kinds = (nn.Conv2d, nn.Linear) if linear else (nn.Conv2d,)
    for m in model.modules():
        if isinstance(m, kinds):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if linear and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def image_shape(in_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    """Validate a (C, H, W) input shape for an image model."""
    if len(in_shape) != 3:
        raise ValueError(f"{model} needs in_shape (C, H, W), got {in_shape}")
    return tuple(int(s) for s in in_shape)  # type: ignore[return-value]
