"""nasjax: neural architecture search in JAX/Flax.

An architecture is data (a fixed-length int32 array), a search is a pure function of data.
"""

__version__ = "0.1.0"

from nasjax import xla_workarounds as _xla_workarounds

_xla_workarounds.apply()

from nasjax.errors import NasjaxError  # noqa: E402,F401
