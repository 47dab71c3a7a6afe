"""Registry of model families, each with a width multiplier.

The registry itself is :mod:`.registry` (``register``, ``build_model``, ``available``);
each family module registers its builders there, and this package imports every family, so
``build_model(name, ...)`` works for every name in ``available()``. This package imports
torch and nothing else of sparsebench.

A builder is any callable (function or class) accepting the keyword arguments
``num_classes``, ``in_shape`` and ``width`` (plus optional family-specific
keywords) and returning an ``nn.Module``.

Conventions every model follows (the sparsity engine depends on them):

* all prunable layers are ``nn.Linear`` or ``nn.Conv2d`` modules;
* modules are created in the order forward uses them, so the first
  Linear/Conv2d in ``model.named_modules()`` is the input layer and the last
  is the classifier (``out_features == num_classes``);
* no weight tying;
* ``forward`` maps a float tensor ``(N, *in_shape)`` to logits
  ``(N, num_classes)``;
* width scaling keeps every layer at least one unit/channel wide
  (see :func:`scaled`).
"""
from .registry import accepts, available, build_model, register, scaled

# The families register themselves on import.
from . import lenet, mlp, resnet_cifar, resnet_imagenet, simple_vit, vgg, vit  # noqa: E402,F401

__all__ = ["register", "available", "accepts", "build_model", "scaled"]
