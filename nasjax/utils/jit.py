"""``jax.jit`` with the XLA compile options nasjax's programs run best with on each backend.

On CPU, XLA's ``CPU_OPT_PRESET_FAST_COMPILE`` optimisation preset skips HLO passes that spend compile time
to buy runtime. nasjax's programs are many small fused loops inside ``lax.scan`` bodies, where those passes
buy nothing: for the DARTS search supernet's weight step (16 channels, 8 cells, batch 64, 2-core CPU,
jaxlib 0.10.2) the preset made both the compile and the step faster (figures in the README's performance
notes; ``benchmarks/supernet_step.py`` records the options it ran with).

The options go to each compilation (``jax.jit(..., compiler_options=...)``), not to the process-wide
``XLA_FLAGS``: the user's own programs keep XLA's defaults, and a jaxlib that does not know the option is
detected by one tiny compilation and simply gets none (an unknown flag in ``XLA_FLAGS`` aborts the process).
``NASJAX_CPU_PRESET`` chooses another preset: ``fast_compile`` (the default), ``default``, ``fast_runtime``.

``NASJAX_CPU_OPT_LEVEL`` (0-3; unset: XLA's own) sets XLA's backend (LLVM) optimisation level for CPU
programs, for compile-bound work such as short notebook runs. Measured on the DARTS search supernet
(2-core CPU, 2026-11-28): level 1 cut the weight step's compile by 3-19 s (31.7-40.3 s vs 43.5-50.4 s)
at the same step time and the discrete DARTS_V2 network's training step's by ~2.5 s, but made the
first-order search step 19-27% slower (compile 41-44 s vs 57-58 s); level 0 made the weight step 6x
slower. So the default stays XLA's.

``NASJAX_CPU_VECTOR_WIDTH`` (128, 256 or 512 bits; unset or 0: XLA's own) sets the vector width XLA:CPU
prefers. On this AVX2 machine (2026-11-28, weight step, alternating runs, all beside a retraining job)
128 bits cut the compile by 8-20% (61.4 and 74.4 s vs 77.0 and 81.0 s, tracing included) and made the
step 11-29% slower (23.4 and 19.3 s vs 18.1 and 17.4 s): a knob for short compile-bound runs, not a
default.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

from nasjax.errors import NasjaxError

ENV_PRESET = "NASJAX_CPU_PRESET"
ENV_OPT_LEVEL = "NASJAX_CPU_OPT_LEVEL"
ENV_VECTOR_WIDTH = "NASJAX_CPU_VECTOR_WIDTH"
CPU_PRESETS = {"fast_compile": "CPU_OPT_PRESET_FAST_COMPILE", "default": None,
               "fast_runtime": "CPU_OPT_PRESET_FAST_RUNTIME"}


def cpu_preset(environ=os.environ) -> str | None:
  """The XLA CPU preset enum name chosen by ``NASJAX_CPU_PRESET`` (None: XLA's default)."""
  name = environ.get(ENV_PRESET, "fast_compile").strip().lower() or "fast_compile"
  if name not in CPU_PRESETS:
    raise NasjaxError(f"{ENV_PRESET}={name!r} is not a CPU preset; accepted: {', '.join(CPU_PRESETS)}")
  return CPU_PRESETS[name]


def _int_choice(environ, variable: str, accepted: tuple[str, ...], what: str) -> int | None:
  """The integer an environment variable picks from ``accepted``; None when unset or empty."""
  value = environ.get(variable, "").strip()
  if not value:
    return None
  if value not in accepted:
    raise NasjaxError(f"{variable}={value!r} is not {what}; accepted: {', '.join(accepted)} "
                      "(or unset for XLA's own choice)")
  return int(value)


def cpu_opt_level(environ=os.environ) -> int | None:
  """XLA's backend optimisation level chosen by ``NASJAX_CPU_OPT_LEVEL`` (None: XLA's default)."""
  return _int_choice(environ, ENV_OPT_LEVEL, ("0", "1", "2", "3"), "an optimisation level")


def cpu_vector_width(environ=os.environ) -> int | None:
  """The vector width (bits) XLA:CPU prefers, from ``NASJAX_CPU_VECTOR_WIDTH`` (unset or 0: XLA's own)."""
  return _int_choice(environ, ENV_VECTOR_WIDTH, ("0", "128", "256", "512"), "a vector width in bits") or None


@functools.lru_cache(maxsize=None)
def _supported(backend: str, options: tuple) -> bool:
  try:
    # The probe's input lives on ``backend``, so it is that backend's compiler that accepts or refuses.
    probe = jax.device_put(jnp.zeros((), jnp.float32), jax.devices(backend)[0])
    jax.jit(jnp.negative, compiler_options=dict(options)).lower(probe).compile()
  except Exception:  # noqa: BLE001 - any refusal means "this jaxlib does not take the option"
    return False
  return True


def compiler_options(backend: str | None = None) -> dict[str, Any]:
  """The compile options for programs on ``backend`` (default: JAX's default backend); {} if none apply."""
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return {}
  chosen = (("xla_cpu_opt_preset", cpu_preset()), ("xla_backend_optimization_level", cpu_opt_level()),
            ("xla_cpu_prefer_vector_width", cpu_vector_width()))
  return {key: value for key, value in chosen if value is not None and _supported(backend, ((key, value),))}


def jit_with_options(fun: Callable, **kwargs) -> Callable:
  """``jax.jit(fun, **kwargs)`` with :func:`compiler_options` (a caller's own ``compiler_options`` win)."""
  options = {**compiler_options(), **kwargs.pop("compiler_options", {})}
  return jax.jit(fun, compiler_options=options or None, **kwargs)
