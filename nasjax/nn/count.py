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
