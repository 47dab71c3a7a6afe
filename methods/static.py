"""Static sparse training: a random topology under the layer-wise distribution, never changed.

The base :class:`Method` already draws it; this file only names and registers it.
"""
from sparsebench.methods import Method, register


@register
class Static(Method):
    name = "static"
    engines = ("masked", "sparse")
