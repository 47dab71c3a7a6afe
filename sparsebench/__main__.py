"""``python -m sparsebench COMMAND ...``: the same as the ``sparsebench`` command."""
import sys

from .cli import main

sys.exit(main())
