"""Configuration: what one run is, as typed dataclasses, and how it is read from files.

``schema`` holds the run config (one dataclass per group: data, model, optim, method,
sparsity ...), each field validated where it is declared (a bad value is a ``ConfigError``
naming the field and its allowed values: exit 2), the stable ``run_id`` hash and the flat
``key: value`` view of a config; ``files`` reads config and sweep YAML strictly and applies
dotted ``key=value`` overrides.

Imports only :mod:`sparsebench.storage` (the rule for safe names); data, models, methods and
everything above import it.
"""
