"""Dense training: every connection active throughout; the reference every table is relative to."""
from sparsebench.methods import Method, register


@register
class Dense(Method):
    name = "dense"
    fixed_density = 1.0
    default_distribution = "uniform"

    def init_masks(self, ctx):
        """All masks stay full (the engine starts that way)."""
