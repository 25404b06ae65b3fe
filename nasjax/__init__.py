"""nasjax: neural architecture search in JAX/Flax.

An architecture is data (a fixed-length int32 array), a search is a pure function of data. Importing
nasjax configures nothing: on a GPU, call :func:`nasjax.xla_workarounds.apply` before the first JAX
computation (the ``nasjax`` command does).
"""

__version__ = "0.1.0"

from nasjax.errors import DivergenceError, NasjaxError  # noqa: F401
