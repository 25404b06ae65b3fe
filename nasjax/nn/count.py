"""Size and cost of a network: parameters as the papers count them, and multiply-accumulates.

MACs are counted from the jaxpr of one forward pass (convolutions and matrix products only, the
convention of the NAS papers' "multiply-adds"; a k x k convolution producing N output values costs
N * k * k * C_in / groups). Counting from the traced program means any module, discrete network or
supernet, is measured the same way, scanned bodies included (times their trip count).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core


def count_params(params: Any, exclude: Iterable[str] = ("auxiliary_head",)) -> int:
  """Number of parameters, leaving out every subtree whose path contains a name in ``exclude``."""
  excluded = set(exclude)
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = {getattr(k, "key", getattr(k, "name", None)) for k in path}
    if names & excluded:
      continue
    total += int(np.prod(np.shape(leaf)))
  return total


def chosen_op_table(params: Any, locate: Callable[[tuple], tuple[int, str] | None], positions: int,
                    ops: tuple[str, ...]) -> tuple[int, np.ndarray]:
  """Parameters of a network that takes the architecture as data, split by candidate op.

  Returns (the parameters outside every candidate op, int32[positions, len(ops)]: those of op ``o`` at
  position ``k``, summed over the network's repeats of that position, such as NB201's cells). ``params`` is the switch network's parameter tree (shapes are
  enough); ``locate(path)`` names the (position, op) of a leaf inside a candidate op and None elsewhere.
  With :func:`count_chosen` it counts any architecture's stand-alone network without building it.
  """
  shared = 0
  table = np.zeros((positions, len(ops)), np.int64)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    size = int(np.prod(leaf.shape))
    where = locate(path)
    if where is None:
      shared += size
    else:
      table[where[0], ops.index(where[1])] += size
  table = table.astype(np.int32)
  table.setflags(write=False)  # cached by the callers: shared between calls
  return shared, table


def count_chosen(shared: int, table: np.ndarray, choices) -> jax.Array:
  """``shared`` plus each position's chosen op from :func:`chosen_op_table`; ``choices`` int[positions].

  Jittable, and vmappable in ``choices`` for a batch of architectures.
  """
  chosen = jnp.take_along_axis(jnp.asarray(table), jnp.asarray(choices, jnp.int32)[..., None], axis=-1)[..., 0]
  return shared + jnp.sum(chosen, axis=-1)


def _eqn_macs(eqn) -> int:
  name = eqn.primitive.name
  if name == "conv_general_dilated":
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    # rhs_spec = (out feature dim, in feature dim, spatial dims...)
    in_per_group = rhs[dn.rhs_spec[1]]
    window = math.prod(rhs[d] for d in dn.rhs_spec[2:])
    return math.prod(out) * in_per_group * window
  if name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return math.prod(out) * math.prod(lhs[d] for d in lhs_contract)
  return 0


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += _eqn_macs(eqn)
    for param_name, value in eqn.params.items():
      subs = value if isinstance(value, (tuple, list)) else (value,)
      for sub in subs:
        inner = getattr(sub, "jaxpr", sub)
        if isinstance(inner, jex_core.Jaxpr):
          factor = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
          if eqn.primitive.name == "cond":
            # Only one branch runs; count the most expensive to stay an upper bound.
            total += max(_jaxpr_macs(getattr(b, "jaxpr", b)) for b in value) if param_name == "branches" else 0
            break
          total += factor * _jaxpr_macs(inner)
  return total


def count_macs(fn: Callable, *args, **kwargs) -> int:
  """Multiply-accumulates of ``fn(*args, **kwargs)``, from its jaxpr (nothing is executed)."""
  closed = jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)
  return _jaxpr_macs(closed.jaxpr)
