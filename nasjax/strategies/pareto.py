"""Pareto machinery over objective vectors: dominance, non-dominated ranks, crowding, hypervolume.

Every objective is MAXIMISED here (a driver flips the sign of the minimised ones, e.g. latency); a row
with any non-finite value is a failed evaluation: it dominates nothing, is dominated by every valid row
and gets the worst rank. All functions except :func:`hypervolume` (the host dispatcher) are pure ``jnp``
with static shapes, so they run under ``jit`` and ``vmap`` over seeds.

* Non-dominated sorting and crowding distance: Deb, Pratap, Agarwal & Meyarivan, "A Fast and Elitist
  Multiobjective Genetic Algorithm: NSGA-II", IEEE TEVC 6(2), 2002 (Sections III-A and III-B). Ranks are
  found by peeling fronts off the O(N^2 M) dominance matrix, the same fronts as the paper's bookkeeping.
* Hypervolume (Zitzler & Thiele, "Multiobjective Optimization Using Evolutionary Algorithms - A
  Comparative Case Study", PPSN 1998): the volume dominated by a set and bounded by a reference point
  that every counted point must strictly beat. Two objectives: the exact sweep over points sorted by the
  first objective. Any number of objectives: exact by coordinate compression (the N^M grid cells between
  the points' coordinates, each covered or not), for small fronts; larger ones go to pymoo on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError

# Above this many grid-cell x point comparisons the exact compression method is left to pymoo.
EXACT_HV_LIMIT = 20_000_000


def valid_rows(points: jax.Array) -> jax.Array:
  """bool[N]: rows whose objective values are all finite (the others are failed evaluations)."""
  return jnp.all(jnp.isfinite(points), axis=-1)


def domination_matrix(points: jax.Array) -> jax.Array:
  """bool[N, N]: ``[i, j]`` is True when row i dominates row j (>= in every objective, > in one).

  A failed row dominates nothing; every valid row dominates a failed one.
  """
  points = jnp.asarray(points, jnp.float32)
  valid = valid_rows(points)
  a, b = points[:, None, :], points[None, :, :]
  dominates = jnp.all(a >= b, axis=-1) & jnp.any(a > b, axis=-1)
  return valid[:, None] & (dominates | ~valid[None, :])


def pareto_mask(points: jax.Array) -> jax.Array:
  """bool[N]: the valid rows no other row dominates (the first front; equal rows are all kept)."""
  dominated = jnp.any(domination_matrix(points), axis=0)
  return valid_rows(points) & ~dominated


def non_dominated_ranks(points: jax.Array) -> jax.Array:
  """int32[N]: the index of each row's front (0 = non-dominated); failed rows get ``N``.

  Front k is the set of rows dominated only by rows of fronts < k (Deb et al. 2002, Section III-A).
  """
  points = jnp.asarray(points, jnp.float32)
  n = points.shape[0]
  dom = domination_matrix(points)
  valid = valid_rows(points)

  def unranked(carry):
    ranks, _ = carry
    return jnp.any(ranks < 0)

  def peel(carry):
    ranks, front = carry
    remaining = ranks < 0
    dominated = jnp.any(dom & remaining[:, None], axis=0)
    return jnp.where(remaining & ~dominated, front, ranks), front + 1

  start = jnp.where(valid, -1, n).astype(jnp.int32)
  ranks, _ = jax.lax.while_loop(unranked, peel, (start, jnp.int32(0)))
  return ranks


def crowding_distance(points: jax.Array, ranks: jax.Array) -> jax.Array:
  """float32[N]: each row's crowding distance within its own front (Deb et al. 2002, Section III-B).

  Per objective, the rows of a front are sorted; the two boundary rows get infinity and an inner row the
  gap between its two neighbours divided by the front's range of that objective; the distance is the sum
  over objectives. A front of one or two rows is all boundary. Failed rows (rank ``N``) get 0.
  """
  points = jnp.asarray(points, jnp.float32)
  ranks = jnp.asarray(ranks, jnp.int32)
  n = points.shape[0]
  valid = ranks < n
  clean = jnp.where(valid[:, None], points, 0.0)

  def one_objective(f):
    order = jnp.lexsort((f, ranks))  # by front, then by value
    fs, rs = f[order], ranks[order]
    same_prev = jnp.concatenate([jnp.zeros((1,), bool), rs[1:] == rs[:-1]])
    same_next = jnp.concatenate([rs[:-1] == rs[1:], jnp.zeros((1,), bool)])
    lo = jax.ops.segment_min(f, ranks, num_segments=n + 1)[rs]
    hi = jax.ops.segment_max(f, ranks, num_segments=n + 1)[rs]
    span = hi - lo
    gap = (jnp.roll(fs, -1) - jnp.roll(fs, 1)) / jnp.where(span > 0, span, 1.0)
    d = jnp.where(same_prev & same_next, gap, jnp.inf)
    return jnp.zeros((n,), jnp.float32).at[order].set(d)

  distance = jnp.sum(jax.vmap(one_objective, in_axes=1, out_axes=1)(clean), axis=1)
  return jnp.where(valid, distance, 0.0)


def rank_and_crowding_order(points: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(order int32[N], ranks, crowding): rows sorted best first by (rank ascending, crowding descending),
  NSGA-II's crowded-comparison order; ties keep the row order."""
  ranks = non_dominated_ranks(points)
  crowd = crowding_distance(points, ranks)
  order = jnp.lexsort((-crowd, ranks))
  return order, ranks, crowd


def _clip_to_reference(points: jax.Array, reference: jax.Array) -> jax.Array:
  """Rows that fail, or do not strictly beat the reference in every objective, collapse onto it (they
  add no volume)."""
  beats = valid_rows(points) & jnp.all(points > reference, axis=-1)
  return jnp.where(beats[:, None], points, reference)


def hypervolume_2d(points: jax.Array, reference: jax.Array) -> jax.Array:
  """float32: exact hypervolume of two maximised objectives above ``reference`` (float[2]).

  Sweep: sorted by the first objective (largest first), the slab between consecutive first-objective
  values is covered up to the best second objective seen so far.
  """
  points = jnp.asarray(points, jnp.float32)
  reference = jnp.asarray(reference, jnp.float32)
  if points.ndim != 2 or points.shape[1] != 2 or reference.shape != (2,):
    raise NasjaxError(f"hypervolume_2d takes points [N, 2] and a reference [2]; got {points.shape} and "
                      f"{reference.shape}")
  p = _clip_to_reference(points, reference)
  order = jnp.argsort(-p[:, 0])
  x, y = p[order, 0], p[order, 1]
  best_y = jax.lax.cummax(y)
  width = x - jnp.concatenate([x[1:], reference[:1]])
  return jnp.sum(width * (best_y - reference[1]))


def hypervolume_exact(points: jax.Array, reference: jax.Array) -> jax.Array:
  """float32: exact hypervolume of any number M of maximised objectives, for small fronts.

  Coordinate compression: along each objective the points' values cut the box above ``reference`` into
  at most N slabs; a grid cell is covered when some point beats its upper corner in every objective.
  Costs N^M cells x N points (static shapes), so it suits fronts of tens of points in 3-4 objectives.
  """
  points = jnp.asarray(points, jnp.float32)
  reference = jnp.asarray(reference, jnp.float32)
  if points.ndim != 2 or reference.shape != (points.shape[1],):
    raise NasjaxError(f"hypervolume takes points [N, M] and a reference [M]; got {points.shape} and "
                      f"{reference.shape}")
  n, m = points.shape
  p = _clip_to_reference(points, reference)
  upper = jnp.sort(p, axis=0)                                     # [N, M] slab upper edges
  lower = jnp.concatenate([reference[None, :], upper[:-1]], axis=0)
  width = upper - lower                                           # [N, M] (0 for repeated values)
  grids = jnp.meshgrid(*[jnp.arange(n)] * m, indexing="ij")
  cells = jnp.stack([g.reshape(-1) for g in grids], axis=1)       # [N^M, M] slab index per objective
  corner = upper[cells, jnp.arange(m)]                            # [N^M, M]
  covered = jnp.any(jnp.all(p[None, :, :] >= corner[:, None, :], axis=-1), axis=1)
  volume = jnp.prod(width[cells, jnp.arange(m)], axis=1)
  return jnp.sum(jnp.where(covered, volume, 0.0))


def hypervolume(points, reference) -> float:
  """The hypervolume of maximised objective vectors above ``reference`` (host; float64 for M = 2).

  Two objectives: the exact sweep. More: exact coordinate compression while N^M x N stays below
  :data:`EXACT_HV_LIMIT`, else pymoo's exact algorithm (``pymoo.indicators.hv``) on the non-dominated
  rows, which needs pymoo installed.
  """
  points = np.asarray(points, np.float64)
  reference = np.asarray(reference, np.float64)
  if points.ndim != 2 or reference.shape != (points.shape[1],) or points.shape[1] < 1:
    raise NasjaxError(f"hypervolume takes points [N, M] and a reference [M]; got {points.shape} and "
                      f"{reference.shape}")
  if not np.all(np.isfinite(reference)):
    raise NasjaxError(f"the hypervolume reference point must be finite; got {reference.tolist()}")
  n, m = points.shape
  if n == 0:
    return 0.0
  beats = np.all(np.isfinite(points), axis=1) & np.all(points > reference, axis=1)
  points = points[beats]
  if len(points) == 0:
    return 0.0
  if m == 1:
    return float(points.max() - reference[0])
  front = points[pareto_mask_host(points)]
  if m == 2:
    order = np.argsort(-front[:, 0], kind="stable")
    x, y = front[order, 0], np.maximum.accumulate(front[order, 1])
    width = x - np.concatenate([x[1:], reference[:1]])
    return float(np.sum(width * (y - reference[1])))
  if len(front) ** m * len(front) <= EXACT_HV_LIMIT:
    return _hypervolume_exact_host(front, reference)
  try:
    from pymoo.indicators.hv import HV
  except ImportError:
    raise NasjaxError(f"the hypervolume of {len(front)} points in {m} objectives needs pymoo (pip install "
                      "pymoo); the exact method built in is for small fronts") from None
  return float(HV(ref_point=-reference)(-front))  # pymoo minimises


def _hypervolume_exact_host(points: np.ndarray, reference: np.ndarray) -> float:
  """:func:`hypervolume_exact` in float64 on the host, for rows that all beat the reference."""
  n, m = points.shape
  upper = np.sort(points, axis=0)
  width = upper - np.concatenate([reference[None, :], upper[:-1]], axis=0)
  cells = np.stack([g.reshape(-1) for g in np.meshgrid(*[np.arange(n)] * m, indexing="ij")], axis=1)
  corner = upper[cells, np.arange(m)]
  covered = np.any(np.all(points[None, :, :] >= corner[:, None, :], axis=-1), axis=1)
  return float(np.sum(np.prod(width[cells, np.arange(m)], axis=1)[covered]))


def pareto_mask_host(points: np.ndarray) -> np.ndarray:
  """:func:`pareto_mask` in float64 on the host (finite rows only), so no rounding decides dominance."""
  a, b = points[:, None, :], points[None, :, :]
  dominated = np.any(np.all(a >= b, axis=-1) & np.any(a > b, axis=-1), axis=0)
  return ~dominated


__all__ = ["EXACT_HV_LIMIT", "crowding_distance", "domination_matrix", "hypervolume", "hypervolume_2d",
           "hypervolume_exact", "non_dominated_ranks", "pareto_mask", "pareto_mask_host", "rank_and_crowding_order",
           "valid_rows"]
