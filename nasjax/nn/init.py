"""Initialising a whole model from one random draw, because XLA:CPU compiles per-parameter RNG slowly.

Flax's ``Module.init`` calls a random initialiser for every parameter. On XLA:CPU each call (``threefry``
or ``rng_bit_generator``) is expanded into hundreds of integer HLO ops and its own fused kernels, so a
DARTS supernet's ``init`` compiles for minutes (measured: a 2-cell, 3-op supernet 25-30 s, the 8-cell
search supernet 133 s) while running in milliseconds. :func:`init_variables` instead

1. traces ``init`` abstractly (``jax.eval_shape``: shapes and names only, nothing compiled), then
2. fills every leaf on the host with NumPy (truncated-normal draws from a generator seeded by the key).

The distributions are those of nasjax's modules: every ``kernel`` is LeCun-normal (truncated normal,
variance ``1 / fan_in``, ``fan_in`` = product of all but the output axis; a leading edge axis of a stacked
:class:`~nasjax.nn.supernet.EdgeStack` is a batch of kernels and not part of ``fan_in``), BatchNorm
``scale``/``var`` are ones, ``bias``/``mean`` zeros. A leaf of any other name falls back to the
module's own ``init``, so a new op with another initialiser stays correct, just slower to compile.

:func:`draw_variables` is the same rule inside a traced program (jittable, vmappable over keys), for
programs that must initialise from a key they receive: one truncated-normal draw for all kernels
instead of one random initialiser per parameter.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.utils.jit import jit_with_options

# LeCun normal as Flax computes it: a normal truncated at +-2 std, rescaled to unit variance.
_TRUNCATED_STD = 0.87962566103423978
_ONES = ("scale", "var")
_ZEROS = ("bias", "mean")


def _path_names(path) -> list[str]:
  return [str(getattr(p, "key", getattr(p, "name", p))) for p in path]


def _leaf_rule(path, leaf) -> tuple[str, float] | None:
  names = _path_names(path)
  name = names[-1]
  if name == "kernel":
    shape = leaf.shape[1:] if "edges" in names else leaf.shape
    fan_in = math.prod(shape[:-1]) if len(shape) > 1 else 1
    return "normal", 1.0 / math.sqrt(max(1, fan_in)) / _TRUNCATED_STD
  if name in _ONES:
    return "ones", 0.0
  if name in _ZEROS:
    return "zeros", 0.0
  return None


def init_variables(module, key: jax.Array, *args: Any, **kwargs: Any) -> dict:
  """``module.init(key, *args, **kwargs)`` with the same distributions, compiled in about a second.

  ``key`` may be a PRNG key or a dict of them (``{"params": k, "dropout": k}``); the parameter draw uses
  ``key["params"]`` (or ``key``).
  """
  abstract = jax.eval_shape(lambda k: module.init(k, *args, **kwargs), key)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  rules = [_leaf_rule(path, leaf) for path, leaf in leaves]
  if any(rule is None for rule in rules):
    return jit_with_options(lambda k: module.init(k, *args, **kwargs))(key)
  # The draw is made on the host with NumPy: no XLA program to compile at all, and the same values on
  # every backend. The seed is the key's raw data, so the key decides the values as with ``init``.
  param_key = key["params"] if isinstance(key, dict) else key
  seed = np.frombuffer(np.asarray(jax.random.key_data(param_key)).tobytes(), np.uint32)
  rng = np.random.default_rng(seed)
  out = []
  for (_, leaf), (kind, std) in zip(leaves, rules):
    if kind == "normal":
      value = _truncated_normal(rng, leaf.shape) * std
    else:
      value = np.full(leaf.shape, 1.0 if kind == "ones" else 0.0)
    out.append(jnp.asarray(value, leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def draw_variables(module, key: jax.Array, *args: Any, **kwargs: Any) -> dict:
  """``module.init(key, *args, **kwargs)``'s distributions drawn inside the program: jittable and vmappable.

  The values differ from ``init``'s (one draw of all kernels, split in leaf order, not one per
  parameter); the key decides them. If any leaf has no rule, the whole tree comes from the module's own
  ``init`` (inside a program there is no per-leaf fallback without tracing ``init`` anyway).
  """
  abstract = jax.eval_shape(lambda k: module.init(k, *args, **kwargs), key)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  rules = [_leaf_rule(path, leaf) for path, leaf in leaves]
  if any(rule is None for rule in rules):
    return module.init(key, *args, **kwargs)
  param_key = key["params"] if isinstance(key, dict) else key
  sizes = [math.prod(leaf.shape) for (_, leaf), (kind, _) in zip(leaves, rules) if kind == "normal"]
  draw = jax.random.truncated_normal(param_key, -2.0, 2.0, (sum(sizes),), jnp.float32)
  out, start = [], 0
  for (_, leaf), (kind, std) in zip(leaves, rules):
    if kind == "normal":
      size = math.prod(leaf.shape)
      value = (draw[start:start + size] * std).reshape(leaf.shape)
      start += size
    else:
      value = jnp.full(leaf.shape, 1.0 if kind == "ones" else 0.0)
    out.append(value.astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def _truncated_normal(rng: np.random.Generator, shape) -> np.ndarray:
  """Standard normal truncated to [-2, 2] by resampling, as ``jax.random.truncated_normal`` defines it."""
  x = rng.standard_normal(shape)
  bad = np.abs(x) > 2.0
  while bad.any():
    x[bad] = rng.standard_normal(int(bad.sum()))
    bad = np.abs(x) > 2.0
  return x
