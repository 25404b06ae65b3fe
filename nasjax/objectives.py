"""Objectives of a search: which metrics are maximised or minimised, under which constraints.

A search is told what to optimise by names of metrics the estimator returns, each with a direction:
``objectives=("accuracy:max", "latency_s:min")``, and optionally constraints such as ``"latency_s<=0.002"``
("the best accuracy with latency below 2 ms"). :class:`Objectives` turns an evaluation's metrics into
what a strategy is told:

* the *maximised* objective vector (minimised metrics negated), float[M];
* an infeasible evaluation (a constraint violated) is told as NaN, the strategy contract's failed
  evaluation. Why NaN and not a penalty: every strategy already guarantees that a NaN never becomes a
  parent, an incumbent or a promoted configuration, so one rule constrains every strategy (NSGA-II,
  evolution, BO, Hyperband) exactly, without a penalty scale per metric that would have to be tuned to
  the objective's units. Its cost: a search learns nothing from how far an infeasible candidate missed
  (MnasNet's soft penalty, :func:`nasjax.estimators.cost.constrained` with ``mode="penalty"``, does).
* a multi-objective strategy (``Strategy.num_objectives`` = M, NSGA-II) gets the vector; a
  single-objective strategy gets one number: the single objective, or the weighted sum given by
  ``weights`` (:func:`nasjax.strategies.scalarized.scalarized`).

Names are checked against what the estimator produces before the search starts: a jittable estimator
is traced abstractly (``jax.eval_shape``, nothing is computed), an estimator with a ``metric_names``
attribute says it; for any other the first evaluation is checked. An unknown name, a constraint on a
metric the estimator does not produce, a bad direction or comparison is one :class:`NasjaxError` line.

:func:`pareto_summary` is what a finished search reports: the Pareto front of the feasible evaluations
(architectures and objective values) and its hypervolume above a stated reference point.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.strategies import pareto
from nasjax.strategies.base import Strategy

DIRECTIONS = {"max": 1.0, "min": -1.0, "maximize": 1.0, "minimize": -1.0, "maximise": 1.0, "minimise": -1.0}
COMPARISONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_JNP_COMPARISONS = {"<=": jnp.less_equal, ">=": jnp.greater_equal, "<": jnp.less, ">": jnp.greater}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")
REFERENCE_RULE = ("the worst value of each objective over the feasible evaluations (a stated reference "
                  "replaces it)")


@dataclasses.dataclass(frozen=True)
class Objective:
  """A metric name and its direction (``"max"`` or ``"min"``)."""
  name: str
  direction: str

  @property
  def sign(self) -> float:
    return DIRECTIONS[self.direction]

  def __str__(self) -> str:
    return f"{self.name}:{self.direction}"


@dataclasses.dataclass(frozen=True)
class Constraint:
  """``metric <op> bound`` with op one of ``<=``, ``>=``, ``<``, ``>``."""
  metric: str
  op: str
  bound: float

  def holds(self, value: float) -> bool:
    return bool(math.isfinite(value) and COMPARISONS[self.op](value, self.bound))

  def __str__(self) -> str:
    return f"{self.metric}{self.op}{self.bound:g}"


def parse_objective(spec: Any) -> Objective:
  """``"accuracy:max"`` / ``"latency_s:min"`` (``"accuracy"`` alone is maximised) -> :class:`Objective`."""
  if isinstance(spec, Objective):
    return spec
  if not isinstance(spec, str) or not spec.strip():
    raise NasjaxError(f"an objective is NAME:max or NAME:min (e.g. accuracy:max, latency_s:min); got {spec!r}")
  name, _, direction = spec.strip().partition(":")
  direction = (direction.strip().lower() or "max")
  if direction not in DIRECTIONS or not name.strip():
    raise NasjaxError(f"objective {spec!r}: write NAME:max or NAME:min (e.g. accuracy:max, latency_s:min)")
  return Objective(name.strip(), "max" if DIRECTIONS[direction] > 0 else "min")


def parse_constraint(spec: Any) -> Constraint:
  """``"latency_s<=0.002"`` -> :class:`Constraint` (a finite bound; ``<=``, ``>=``, ``<``, ``>``)."""
  if isinstance(spec, Constraint):
    return spec
  match = _CONSTRAINT.match(spec) if isinstance(spec, str) else None
  bound = None
  if match:
    try:
      bound = float(match.group(3))
    except ValueError:
      bound = None
  if bound is None or not math.isfinite(bound):
    raise NasjaxError(f"constraint {spec!r}: write METRIC<=BOUND (or >=, <, >) with a finite number, e.g. "
                      "latency_s<=0.002")
  return Constraint(match.group(1), match.group(2), bound)


def _split(specs: Any) -> list:
  if specs is None:
    return []
  if isinstance(specs, (str, Objective, Constraint)):
    specs = [specs]
  out = []
  for s in specs:
    out.extend([p for p in s.split(",") if p.strip()] if isinstance(s, str) else [s])
  return out


@dataclasses.dataclass(frozen=True)
class Objectives:
  """What a search optimises: objectives (in order), constraints, scalarisation weights, HV reference.

  ``weights`` (one per objective, applied to the maximised values) are needed only to drive a
  single-objective strategy with several objectives. ``reference`` (raw values, one per objective) is
  the hypervolume reference point; by default :data:`REFERENCE_RULE`.
  """
  objectives: tuple[Objective, ...]
  constraints: tuple[Constraint, ...] = ()
  weights: tuple[float, ...] | None = None
  reference: tuple[float, ...] | None = None

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(o.name for o in self.objectives)

  @property
  def signs(self) -> np.ndarray:
    return np.asarray([o.sign for o in self.objectives], np.float64)

  @property
  def metrics_needed(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(self.names + tuple(c.metric for c in self.constraints)))

  def describe(self) -> dict:
    """JSON-able description (for a search's identity and result)."""
    return {"objectives": [str(o) for o in self.objectives], "constraints": [str(c) for c in self.constraints],
            "weights": list(self.weights) if self.weights is not None else None,
            "reference": list(self.reference) if self.reference is not None else None}

  # ---------------------------------------------------------------------------------------- checks
  def check_metrics(self, produced: Sequence[str] | None, who: str = "the estimator") -> None:
    """Refuses objectives and constraints on metrics ``produced`` lacks (None: unknown, nothing checked)."""
    if produced is None:
      return
    produced = sorted(produced)
    for o in self.objectives:
      if o.name not in produced:
        raise NasjaxError(f"unknown objective {o.name!r}: {who} produces {', '.join(produced)}")
    for c in self.constraints:
      if c.metric not in produced:
        raise NasjaxError(f"constraint {c}: {who} does not produce {c.metric!r} (it produces "
                          f"{', '.join(produced)})")

  def for_strategy(self, strategy: Strategy) -> Strategy:
    """``strategy`` ready to be told this many objectives: NSGA-II as is, a single-objective strategy
    as is for one objective, or :func:`scalarized` by ``weights`` for several."""
    from nasjax.strategies.scalarized import scalarized
    m, wanted = len(self.objectives), getattr(strategy, "num_objectives", 1)
    if wanted > 1:
      if wanted != m:
        raise NasjaxError(f"strategy {strategy.name} was built for {wanted} objectives; {m} are given "
                          f"({', '.join(map(str, self.objectives))})")
      return strategy
    if m == 1:
      return strategy
    if self.weights is None:
      raise NasjaxError(f"strategy {strategy.name} optimises one number; with {m} objectives give weights "
                        "(one per objective, e.g. --objective-weights 1,100) or use --strategy nsga2")
    return scalarized(strategy, self.weights)

  # ---------------------------------------------------------------------------------------- values
  def values(self, metrics: dict) -> list[float]:
    """The raw objective values of one evaluation's metrics (NaN where absent or not a number)."""
    out = []
    for name in self.names:
      v = metrics.get(name, float("nan"))
      out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan"))
    return out

  def feasible(self, metrics: dict) -> bool:
    """Whether every constraint holds (a missing or non-finite metric violates it)."""
    for c in self.constraints:
      v = metrics.get(c.metric, float("nan"))
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not c.holds(float(v)):
        return False
    return True

  def fitness_row(self, metrics: dict, failed: bool = False) -> np.ndarray:
    """float32[M]: the maximised objective vector a strategy is told; NaN when failed or infeasible."""
    if failed or not self.feasible(metrics):
      return np.full(len(self.objectives), np.nan, np.float32)
    return (np.asarray(self.values(metrics), np.float64) * self.signs).astype(np.float32)

  def fitness_jnp(self, metrics: dict, n: int) -> tuple[jax.Array, jax.Array]:
    """Traced form for on-device searches: (maximised fitness float32[n, M] with infeasible rows NaN,
    feasible bool[n]) from a vmapped estimator's metrics."""
    cols = [jnp.asarray(metrics[name], jnp.float32).reshape(n) * sign for name, sign in zip(self.names, self.signs)]
    fitness = jnp.stack(cols, axis=1)
    feasible = jnp.ones((n,), bool)
    for c in self.constraints:
      v = jnp.asarray(metrics[c.metric], jnp.float32).reshape(n)
      feasible = feasible & jnp.isfinite(v) & _JNP_COMPARISONS[c.op](v, jnp.float32(c.bound))
    return jnp.where(feasible[:, None], fitness, jnp.nan), feasible

  def scalar(self, fitness_row: np.ndarray) -> float:
    """The single number an incumbent is chosen by: the weighted sum of the maximised objectives, or
    the first objective without weights."""
    row = np.asarray(fitness_row, np.float64)
    if self.weights is not None:
      return float(row @ np.asarray(self.weights, np.float64))
    return float(row[0])


def make_objectives(objectives: Any, constraints: Any = None, weights: Any = None,
                    reference: Any = None) -> Objectives:
  """Builds :class:`Objectives` from specs: ``("accuracy:max", "latency_s:min")`` or one comma-separated
  string, constraints ``("latency_s<=0.002",)``, weights and a reference point as numbers (or
  comma-separated strings)."""
  objs = tuple(parse_objective(s) for s in _split(objectives))
  if not objs:
    raise NasjaxError("give at least one objective, e.g. accuracy:max")
  names = [o.name for o in objs]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise NasjaxError(f"objective {', '.join(repeated)} is given twice; name each metric once")
  cons = tuple(parse_constraint(s) for s in _split(constraints))
  return Objectives(objs, cons, _numbers(weights, len(objs), "weights"), _numbers(reference, len(objs), "reference"))


def _numbers(values: Any, m: int, what: str) -> tuple[float, ...] | None:
  if values is None:
    return None
  items = _split(values) if isinstance(values, str) else list(np.atleast_1d(values))
  try:
    out = tuple(float(v) for v in items)
  except (TypeError, ValueError):
    out = ()
  if len(out) != m or not all(math.isfinite(v) for v in out):
    raise NasjaxError(f"{what} must be {m} finite number(s), one per objective; got {values!r}")
  return out


def metric_names(estimator: Callable, num_decisions: int | None) -> tuple[str, ...] | None:
  """The metric names ``estimator`` returns, known without evaluating it: its ``metric_names``
  attribute, else (jittable estimators) an abstract trace; None when they cannot be known beforehand."""
  declared = getattr(estimator, "metric_names", None)
  if declared is not None:
    return tuple(declared)
  parts = getattr(estimator, "estimators", None)  # a merged estimator (objective_metrics.with_metrics)
  if parts is not None:
    names = [metric_names(part, num_decisions) for part in parts]
    return None if any(n is None for n in names) else tuple(dict.fromkeys(n for group in names for n in group))
  if not getattr(estimator, "jittable", False) or num_decisions is None:
    return None
  try:
    shapes = jax.eval_shape(estimator, jax.ShapeDtypeStruct((num_decisions,), jnp.int32), jax.random.key(0))
  except Exception:  # noqa: BLE001 - an estimator that cannot be traced abstractly is checked when it runs
    return None
  return tuple(shapes) if isinstance(shapes, dict) else None


# -------------------------------------------------------------------------------------------- results
def pareto_summary(records: Sequence[dict], objectives: Objectives) -> dict:
  """The Pareto front of a finished search's records (each with ``metrics``, ``failed``, ``arch`` and
  optionally ``genotype`` and ``index``) and its hypervolume.

  The front is over the feasible, non-failed evaluations, in the objectives' own directions; it lists
  each member's architecture and raw objective values, best first objective first. The hypervolume is
  computed over the maximised values above the reference point (raw values in the result), by
  :func:`nasjax.strategies.pareto.hypervolume`.
  """
  ok = [r for r in records if not r["failed"] and objectives.feasible(r["metrics"])]
  rows = (np.asarray([objectives.values(r["metrics"]) for r in ok], np.float64).reshape(-1, len(objectives.names))
          * objectives.signs)
  usable = np.all(np.isfinite(rows), axis=1)
  ok, rows = [r for r, u in zip(ok, usable) if u], rows[usable]
  signs = objectives.signs
  if objectives.reference is not None:
    reference_raw = np.asarray(objectives.reference, np.float64)
    rule = "given"
  elif len(rows):
    reference_raw = rows.min(axis=0) * signs  # the worst maximised value, back in raw units
    rule = REFERENCE_RULE
  else:
    reference_raw = None
    rule = REFERENCE_RULE
  summary = {"objectives": [str(o) for o in objectives.objectives],
             "constraints": [str(c) for c in objectives.constraints],
             "num_feasible": len(ok), "num_evaluated": len(records), "front": [],
             "hypervolume": 0.0, "reference": None, "reference_rule": rule}
  if not len(rows):
    return summary
  mask = pareto.pareto_mask_host(rows)
  members = sorted(np.flatnonzero(mask), key=lambda i: (-rows[i, 0], int(ok[i].get("index", i))))
  front = []
  for i in members:
    r = ok[i]
    entry = {"index": r.get("index"), "arch": r["arch"],
             "objectives": dict(zip(objectives.names, objectives.values(r["metrics"])))}
    if "genotype" in r:
      entry["genotype"] = r["genotype"]
    front.append(entry)
  summary.update(front=front, reference=dict(zip(objectives.names, reference_raw.tolist())),
                 hypervolume=pareto.hypervolume(rows, reference_raw * signs))
  return summary


__all__ = ["COMPARISONS", "Constraint", "DIRECTIONS", "Objective", "Objectives", "REFERENCE_RULE",
           "make_objectives", "metric_names", "parse_constraint", "parse_objective", "pareto_summary"]
