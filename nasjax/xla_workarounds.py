"""XLA flags for compiler failures seen on nasjax's own programs, applied only when asked for.

Importing nasjax changes nothing in the process. ``XLA_FLAGS`` is read once, when JAX creates its
backends (at the first computation), so a program that runs nasjax on a GPU calls::

    import nasjax.xla_workarounds
    nasjax.xla_workarounds.apply()   # before the first JAX computation

The ``nasjax`` command (:func:`nasjax.cli.main`) and ``benchmarks/supernet_step.py`` do this themselves.
:func:`apply` never overrides a flag the user already put in ``XLA_FLAGS``, and ``NASJAX_KEEP_XLA_FLAGS=1``
turns it off.

- ``--xla_gpu_enable_triton_gemm=false``: with jax/jaxlib 0.11.2 on an H100, XLA:GPU aborted the process
  while compiling every supernet step (eval, weights, first, second order) with
  ``triton_tiling_propagation.cc:703 Check failed: subdim_size_accumulator == dim_size (64 vs. 16)``; with
  Triton GEMM fusions off the same programs compiled and ran (cuBLAS serves the few matrix products; the
  convolutions go to cuDNN either way). The flag is known to every XLA backend, so it is harmless on CPU.
"""

from __future__ import annotations

import os

FLAGS = ("--xla_gpu_enable_triton_gemm=false",)
ENV_KEEP = "NASJAX_KEEP_XLA_FLAGS"


def apply(environ=None) -> str:
  """Appends each of :data:`FLAGS` the user has not set to ``XLA_FLAGS``; returns the resulting value.

  ``environ`` defaults to ``os.environ``. Call it before the process's first JAX computation: flags added
  after JAX has created its backends have no effect.
  """
  environ = os.environ if environ is None else environ
  current = environ.get("XLA_FLAGS", "")
  if environ.get(ENV_KEEP, "") not in ("", "0"):
    return current
  added = [f for f in FLAGS if f.split("=")[0] not in current]
  if added:
    environ["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()
  return environ.get("XLA_FLAGS", "")
