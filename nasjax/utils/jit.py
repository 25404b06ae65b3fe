"""``jax.jit`` with the XLA compile options nasjax's programs run best with on each backend.

On CPU, XLA's ``CPU_OPT_PRESET_FAST_COMPILE`` optimisation preset skips HLO passes that spend compile time
to buy runtime. nasjax's programs are many small fused loops inside ``lax.scan`` bodies, where those passes
buy nothing: for the DARTS search supernet's weight step (16 channels, 8 cells, batch 64, 2-core CPU,
jaxlib 0.10.2) the preset made both the compile and the step faster (figures in the README's performance
notes; ``benchmarks/supernet_step.py`` records the options it ran with).

The options go to each compilation (``jax.jit(..., compiler_options=...)``), not to the process-wide
``XLA_FLAGS``: the user's own programs keep XLA's defaults, and a jaxlib that does not know the option is
detected by one tiny compilation and simply gets none (an unknown flag in ``XLA_FLAGS`` aborts the process).
The preset is an argument (``cpu_preset``: ``fast_compile``, the default, ``default`` or ``fast_runtime``),
never read from the environment.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError

CPU_PRESETS = {"fast_compile": "CPU_OPT_PRESET_FAST_COMPILE", "default": None,
               "fast_runtime": "CPU_OPT_PRESET_FAST_RUNTIME"}
DEFAULT_CPU_PRESET = "fast_compile"


def cpu_preset(name: str = DEFAULT_CPU_PRESET) -> str | None:
  """The XLA CPU preset enum name of the preset called ``name`` (None: XLA's default)."""
  if name not in CPU_PRESETS:
    raise NasjaxError(f"{name!r} is not a CPU preset; accepted: {', '.join(CPU_PRESETS)}")
  return CPU_PRESETS[name]


@functools.lru_cache(maxsize=None)
def _supported(backend: str, options: tuple) -> bool:
  try:
    # The probe's input lives on ``backend``, so it is that backend's compiler that accepts or refuses.
    probe = jax.device_put(jnp.zeros((), jnp.float32), jax.devices(backend)[0])
    jax.jit(jnp.negative, compiler_options=dict(options)).lower(probe).compile()
  except Exception:  # noqa: BLE001 - any refusal means "this jaxlib does not take the option"
    return False
  return True


def compiler_options(backend: str | None = None, preset: str = DEFAULT_CPU_PRESET) -> dict[str, Any]:
  """The compile options for programs on ``backend`` (default: JAX's default backend); {} if none apply.

  ``preset`` names the CPU preset (:data:`CPU_PRESETS`); it is checked whatever the backend.
  """
  preset = cpu_preset(preset)
  backend = backend or jax.default_backend()
  if backend != "cpu" or preset is None:
    return {}
  options = (("xla_cpu_opt_preset", preset),)
  return dict(options) if _supported(backend, options) else {}


def jit_with_options(fun: Callable, *, cpu_preset: str = DEFAULT_CPU_PRESET, **kwargs) -> Callable:
  """``jax.jit(fun, **kwargs)`` with :func:`compiler_options` (a caller's own ``compiler_options`` win)."""
  options = {**compiler_options(preset=cpu_preset), **kwargs.pop("compiler_options", {})}
  return jax.jit(fun, compiler_options=options or None, **kwargs)
