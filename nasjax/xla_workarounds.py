"""XLA flags nasjax sets before JAX starts, each for a compiler failure seen on nasjax's own programs.

Applied on ``import nasjax`` (so before JAX creates its backends, as long as nasjax is imported before the
first computation); a flag the user already put in ``XLA_FLAGS`` is never overridden, and
``NASJAX_KEEP_XLA_FLAGS=1`` turns all of this off.

- ``--xla_gpu_enable_triton_gemm=false``: with jax/jaxlib 0.11.2 on an H100 (2026-11-27), XLA:GPU aborted
  the process while compiling every supernet step (eval, weights, first, second order) with
  ``triton_tiling_propagation.cc:703 Check failed: subdim_size_accumulator == dim_size (64 vs. 16)``; with
  Triton GEMM fusions off the same programs compiled and ran (cuBLAS serves the few matrix products; the
  convolutions go to cuDNN either way). The flag is known to every XLA backend, so it is harmless on CPU.
"""

from __future__ import annotations

import os

FLAGS = ("--xla_gpu_enable_triton_gemm=false",)
ENV_KEEP = "NASJAX_KEEP_XLA_FLAGS"


def apply(environ=os.environ) -> str:
  """Appends each of :data:`FLAGS` the user has not set to ``XLA_FLAGS``; returns the resulting value."""
  current = environ.get("XLA_FLAGS", "")
  if environ.get(ENV_KEEP, "") not in ("", "0"):
    return current
  added = [f for f in FLAGS if f.split("=")[0] not in current]
  if added:
    environ["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()
  return environ.get("XLA_FLAGS", "")
