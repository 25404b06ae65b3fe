"""Grid search: exhaustive enumeration of a space, or of a sub-grid of allowed values per decision.

The baseline that every tabular NAS benchmark makes possible (Ying et al., "NAS-Bench-101", ICML 2019;
Dong & Yang, "NAS-Bench-201", ICLR 2020, evaluate all their cells this way). Points are visited in
mixed-radix order with the FIRST decision most significant, so on the full NB-201 grid the i-th asked
cell is the one with ``NB201Space.arch_to_index == i``.

Points that are not valid encodings of the space (DARTS nodes reading one input twice, a macro layer
with a value in a field its type ignores) are skipped, so every valid architecture of the grid is asked
exactly once per pass. After the last point the enumeration starts again (``state["passes"]`` counts
completed passes), which re-evaluates everything once more -- useful only for a noisy estimator; a
driver that wants one pass stops when ``state["passes"] > 0`` or after as many evaluations as valid
points. Grid indices are int32, so a grid may have at most 2**31 - 1 points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.strategies.base import Strategy, check_int, check_space, initial_best, update_best

_MAX_POINTS = 2 ** 31 - 1


def _allowed_values(space, values: Any) -> list[tuple[int, ...]]:
  """Per decision, the sorted tuple of allowed values; validates ``values``."""
  num_choices = space.num_choices
  dims = len(num_choices)
  full = [tuple(range(n)) for n in num_choices]
  if values is None:
    return full
  if isinstance(values, Mapping):
    bad = [k for k in values if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < dims]
    if bad:
      raise NasjaxError(f"grid: values maps decision indices 0..{dims - 1} to allowed values; got key(s) "
                        f"{bad[:5]!r}")
    given = [values.get(d) for d in range(dims)]
  elif isinstance(values, Sequence) and not isinstance(values, str):
    if len(values) != dims:
      raise NasjaxError(f"grid: values needs one entry per decision ({dims} for {space.name}), each None "
                        f"(every value) or a list of allowed values; got {len(values)} entries")
    given = list(values)
  else:
    raise NasjaxError("grid: values must be None, a list with one entry per decision, or a dict "
                      f"{{decision: allowed values}}; got {type(values).__name__}")
  out = []
  for d, entry in enumerate(given):
    if entry is None:
      out.append(full[d])
      continue
    if isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
      entry = (int(entry),)
    if isinstance(entry, str) or not isinstance(entry, Sequence | np.ndarray):
      raise NasjaxError(f"grid: the allowed values of {space.decision_name(d)} must be a list of integers; "
                        f"got {entry!r}")
    entry = list(entry)
    if (not entry or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in entry)
        or len(set(int(v) for v in entry)) != len(entry)
        or not all(0 <= int(v) < num_choices[d] for v in entry)):
      raise NasjaxError(f"grid: the allowed values of {space.decision_name(d)} must be distinct integers in "
                        f"0..{num_choices[d] - 1}; got {entry!r}")
    out.append(tuple(sorted(int(v) for v in entry)))
  return out


def grid_search(space, values: Any = None, batch_size: int = 1) -> Strategy:
  """Asks the points of the grid in mixed-radix order, ``batch_size`` per ask, skipping invalid ones.

  Args:
    space: a search space.
    values: None (every value of every decision), a list with one entry per decision (None or a list
      of allowed values), or a dict ``{decision index: allowed values}`` for a sub-grid.
    batch_size: architectures per ask.

  Raises:
    NasjaxError: for malformed ``values`` or a grid of more than 2**31 - 1 points.

  >>> from nasjax.spaces import NB201Space
  >>> s = grid_search(NB201Space(), values=[None, [0], [0], [0], [0], [1, 3]])  # 5 * 2 = 10 cells
  """
  check_space("grid", space)
  batch_size = check_int("grid", "batch_size", batch_size)
  allowed = _allowed_values(space, values)
  radices = [len(v) for v in allowed]
  size = math.prod(radices)
  if size > _MAX_POINTS:
    raise NasjaxError(f"grid: the grid over {space.name} has {size:.3e} points, more than int32 indexing "
                      f"allows (2**31 - 1 = {_MAX_POINTS}); restrict it with values=[...] per decision")
  dims = len(radices)
  table = np.zeros((dims, max(radices)), np.int32)
  for d, vals in enumerate(allowed):
    table[d, :len(vals)] = vals
  strides = np.asarray([math.prod(radices[d + 1:]) for d in range(dims)], np.int32)
  radix = np.asarray(radices, np.int32)
  rows = np.arange(dims)

  def point(index):
    digits = (index // strides) % radix
    return jnp.asarray(table)[rows, digits]

  def next_valid(cursor):
    # At most one full pass: a grid without a valid point returns its first point instead of hanging.
    def cond(c):
      index, steps = c
      return (~space.is_valid(point(index))) & (steps < size)

    def body(c):
      index, steps = c
      return (index + 1) % size, steps + 1

    return jax.lax.while_loop(cond, body, (cursor, jnp.zeros((), jnp.int32)))[0]

  def advance(index, passes):
    """The next valid point after ``index``, counting a completed pass when the search wraps around."""
    following = next_valid((index + 1) % size)
    return following, passes + (following <= index).astype(jnp.int32)

  def init(key):
    del key
    # The cursor always rests on a valid point, so a pass is complete as soon as its last point is asked.
    return {**initial_best(dims), "cursor": next_valid(jnp.zeros((), jnp.int32)),
            "passes": jnp.zeros((), jnp.int32)}

  def ask(state, key):
    del key

    def one(carry, _):
      index, passes = carry
      return advance(index, passes), point(index)

    (cursor, passes), archs = jax.lax.scan(one, (state["cursor"], state["passes"]), None, length=batch_size)
    return archs.astype(jnp.int32), {**state, "cursor": cursor, "passes": passes}

  def tell(state, archs, fitness):
    return update_best(state, jnp.asarray(archs, jnp.int32), fitness)

  return Strategy(init, ask, tell, name="grid")
