"""The one driver: a strategy, an estimator and a budget give a search, logged and resumable.

Every evaluation is appended to ``workdir/evaluations.jsonl`` as soon as it (and every evaluation asked
before it) has finished. Because a strategy is pure (its state is a function of the key and the fitness
values told so far), that log is the checkpoint: a resumed search re-asks with the same keys and takes the
logged result for every evaluation already done, so it reaches exactly the state of an uninterrupted run
without re-training anything. A line cut by a killed process is dropped and that evaluation redone.

How one asked batch is evaluated is the *executor*'s business, never the result's:

* ``"auto"`` (default): ``"vmap"`` when the estimator says it is jittable, ``"serial"`` otherwise.
* ``"serial"``: one architecture after the other in this process.
* ``"vmap"``: the estimator is a pure, jittable ``(arch, key) -> metrics`` function; the whole batch is one
  ``jax.jit(jax.vmap(estimator))`` call (the batched evaluation that evosax-style strategies assume).
* ``"ray"`` or an executor object, e.g. :class:`nasjax.parallel.ray_executor.RayExecutor`, which runs the evaluations
  of a batch concurrently as Ray tasks (Moritz et al., "Ray: A Distributed Framework for Emerging AI
  Applications", OSDI 2018), retrying crashed ones, as Tune does for hyperparameter trials (Liaw et al.,
  "Tune: A Research Platform for Distributed Model Selection and Training", ICML AutoML workshop 2018).

Every evaluation gets the key ``fold_in(eval_key, j)`` from its position ``j`` in the asked batch, whoever
runs it, so all executors give the same log, and a search started with one can be resumed with another.

An executor is any object with ``evaluate(estimator, archs, keys, fitness_key)`` that yields one
:class:`Outcome` per row of ``archs`` (``np.int32[N, D]``), in that order, as soon as it is known.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import DivergenceError, NasjaxError
from nasjax.estimators.base import default_executor
from nasjax.parallel.distributed import is_main_process
from nasjax.strategies.base import Strategy, asked_fidelity
from nasjax.strategies.budget import admitted, admitted_prefix, incumbent, planned_costs
from nasjax.utils.logging import progress

_LOG_NAME = "evaluations.jsonl"


class Outcome(NamedTuple):
  """The result of one evaluation, as an executor reports it.

  ``metrics`` holds JSON-native values only (what the log stores); ``failed`` marks a NaN/Inf fitness or an
  evaluation that raised (then ``error`` says why, and ``metrics`` is ``{"error": error}``); ``attempts``
  counts retries of executors that retry.
  """
  metrics: dict
  failed: bool
  seconds: float
  error: str | None = None
  attempts: int = 1


def is_divergence_error(error: BaseException) -> bool:
  """True for the error a training estimator raises when its loss became NaN or Inf.

  Such an evaluation is a result (a failed architecture), not an accident: it is recorded as failed at
  once, and never retried, since the same key would diverge again.
  """
  return isinstance(error, DivergenceError)


def _json_default(value: Any) -> Any:
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    return np.asarray(value).tolist()
  raise TypeError(f"{type(value).__name__} is not a number or an array")


def json_metrics(metrics: Any, fitness_key: str) -> dict:
  """``metrics`` as the log stores them (JSON-native numbers and lists), checked to hold ``fitness_key``."""
  if not isinstance(metrics, dict):
    raise NasjaxError(f"an estimator must return a dict of metrics, got {type(metrics).__name__}")
  try:
    native = json.loads(json.dumps(metrics, default=_json_default))
  except (TypeError, ValueError) as e:
    raise NasjaxError(f"the estimator's metrics cannot be logged ({e}); return numbers, arrays or "
                      "strings") from None
  if fitness_key not in native:
    raise NasjaxError(f"the estimator returned no {fitness_key!r} metric (it returned "
                      f"{', '.join(sorted(native)) or 'nothing'}); pass fitness_key= one of those")
  value = native[fitness_key]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise NasjaxError(f"the fitness metric {fitness_key!r} must be one number per architecture, got "
                      f"{value!r}")
  return native


def evaluate_one(estimator: Callable, arch: np.ndarray, key: jax.Array, fitness_key: str) -> Outcome:
  """Evaluates one architecture in this process. A diverged training is a failed outcome; any other
  exception propagates (to the user for the serial executor, to the retry logic for Ray)."""
  t0 = time.perf_counter()
  try:
    metrics = json_metrics(estimator(jnp.asarray(arch), key), fitness_key)
  except NasjaxError as e:
    if not is_divergence_error(e):
      raise
    return Outcome({"error": str(e)}, True, time.perf_counter() - t0, str(e))
  return Outcome(metrics, not math.isfinite(metrics[fitness_key]), time.perf_counter() - t0)


class SerialExecutor:
  """Evaluates one architecture after the other on the host: any estimator, results streamed."""
  name = "serial"

  def evaluate(self, estimator: Callable, archs: np.ndarray, keys: list, fitness_key: str
               ) -> Iterator[Outcome]:
    for arch, key in zip(archs, keys):
      yield evaluate_one(estimator, arch, key, fitness_key)


_TRACING_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                   jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)


class VmapExecutor:
  """Evaluates a whole batch with one ``jax.jit(jax.vmap(estimator))`` call.

  The estimator must be pure and jittable and return a dict of scalars per architecture. Batches are
  padded (by repeating their first row) to the largest size seen, so the last, budget-truncated batch of
  a search does not compile again. An evaluation cannot raise inside ``jit``: a NaN/Inf fitness is its
  failure. Each outcome's ``seconds`` is its share of the batch's wall time.
  """
  name = "vmap"

  def __init__(self):
    self._estimator = None
    self._batched = None
    self._size = 0

  def evaluate(self, estimator: Callable, archs: np.ndarray, keys: list, fitness_key: str
               ) -> Iterator[Outcome]:
    if self._estimator is not estimator:
      self._estimator, self._batched = estimator, jax.jit(jax.vmap(estimator))
    n = len(archs)
    self._size = max(self._size, n)
    rows = np.concatenate([np.arange(n), np.zeros(self._size - n, np.int64)])
    batch_archs = jnp.asarray(np.asarray(archs)[rows], jnp.int32)
    batch_keys = jnp.stack([keys[r] for r in rows])
    t0 = time.perf_counter()
    try:
      metrics = jax.device_get(self._batched(batch_archs, batch_keys))
    except _TRACING_ERRORS as e:
      raise NasjaxError(f"executor='vmap' needs a pure, jittable estimator; this one is not "
                        f"({type(e).__name__}); use executor='serial' for it") from e
    seconds = (time.perf_counter() - t0) / n
    if not isinstance(metrics, dict):
      raise NasjaxError(f"an estimator must return a dict of metrics, got {type(metrics).__name__}")
    for j in range(n):
      row = json_metrics({k: np.asarray(v)[j] for k, v in metrics.items()}, fitness_key)
      yield Outcome(row, not math.isfinite(row[fitness_key]), seconds)


EXECUTORS = ("auto", "serial", "vmap", "ray")


def resolve_executor(executor: Any, estimator: Any = None):
  """``"auto"`` / ``"serial"`` / ``"vmap"`` / ``"ray"`` / None / an executor object -> an executor object.

  ``"auto"`` (and None) follows what the estimator says of itself (:mod:`nasjax.estimators.base`):
  a jittable estimator is vmapped over each batch, any other runs serially.
  """
  if executor is None or executor == "auto":
    executor = default_executor(estimator)
  # Only an estimator that says it is not jittable is refused; one that says nothing may still be.
  if executor == "vmap" and getattr(estimator, "jittable", None) is False:
    raise NasjaxError(f"executor 'vmap' needs a jittable estimator; {_estimator_name(estimator)} is not "
                      "(it trains in a host loop); use executor 'serial' or 'ray'")
  if executor == "ray":
    from nasjax.parallel.ray_executor import RayExecutor
    return RayExecutor()
  if executor == "serial":
    return SerialExecutor()
  if executor == "vmap":
    return VmapExecutor()
  if not isinstance(executor, str) and callable(getattr(executor, "evaluate", None)):
    return executor
  raise NasjaxError(f"unknown executor {executor!r}; accepted: 'auto', 'serial', 'vmap', 'ray', or an object with "
                    "evaluate(estimator, archs, keys, fitness_key), e.g. "
                    "nasjax.parallel.ray_executor.RayExecutor()")


def _estimator_name(estimator: Any) -> str:
  return getattr(estimator, "name", None) or type(estimator).__name__


def _valid_record(rec: Any, index: int) -> bool:
  return (isinstance(rec, dict) and rec.get("index") == index and isinstance(rec.get("arch"), list)
          and isinstance(rec.get("metrics"), dict) and isinstance(rec.get("failed"), bool))


def _load_log(path: str) -> list[dict]:
  """Reads the evaluation log; a line cut by a killed process ends it and is removed from the file.

  Removing it matters: the next record would otherwise be appended to the cut line and be lost too.
  """
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    raw = f.read()
  records, end = [], 0
  for line in raw.splitlines(keepends=True):
    try:
      rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
      if raw[end + len(line):].strip():
        # A kill cuts only the last line; damage before other records is not ours to repair.
        raise NasjaxError(f"{path} line {len(records) + 1} is damaged and not the last line; it is not a "
                          "log cut by a killed search. Point the search at another directory") from None
      break  # the cut line is redone
    if not _valid_record(rec, len(records)):
      raise NasjaxError(f"{path} line {len(records) + 1} is not record {len(records)} of a nasjax search "
                        "log (index, arch, metrics, failed); point the search at another directory")
    records.append(rec)
    end += len(line)
  kept = raw[:end]
  if kept and not kept.endswith(b"\n"):
    kept += b"\n"
  if kept != raw:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
      f.write(kept)
    os.replace(tmp, path)
  return records


def _check_identity(done: list[dict], identity: dict | None, log_path: str) -> None:
  if not done or identity is None:
    return
  stored, wanted = done[0].get("identity"), json.loads(json.dumps(identity))
  if stored != wanted:
    if isinstance(stored, dict) and isinstance(wanted, dict):
      diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
      why = f"differs in: {', '.join(diff)}"
    else:
      why = "different settings"
    raise NasjaxError(f"{log_path} was written by another search ({why}); resume with the same settings "
                      "or use another --out directory")


def _closing(outcomes: Iterable[Outcome]) -> None:
  close = getattr(outcomes, "close", None)
  if close is not None:
    close()  # lets an executor cancel evaluations still running when the search stops early


def run(strategy: Strategy, estimator: Callable, budget: int, key: jax.Array, *, workdir: str | None = None,
        identity: dict | None = None, fitness_key: str = "accuracy", show_progress: bool = True,
        to_string: Callable | None = None, executor: Any = "auto", objectives: Any = None) -> dict:
  """Runs ``strategy`` until ``budget`` architectures have been evaluated; returns the best and history.

  Args:
    strategy: an ``init / ask / tell`` :class:`Strategy`; fitness is maximised, NaN marks a failure.
    estimator: ``estimator(arch, key) -> metrics`` (a dict holding ``fitness_key``). For a Ray executor it
      must be picklable (see :mod:`nasjax.parallel.ray_executor`); for ``"vmap"`` pure and jittable.
    budget: the number of architectures to evaluate; for a multi-fidelity strategy (Hyperband), the
      number of full-training equivalents (``strategy.fidelity_costs`` per level), and the estimator is
      called as ``estimator(arch, key, fidelity=level)``.
    key: the search's PRNG key; the same key gives the same search with every executor.
    workdir: where ``evaluations.jsonl`` is written; a run with an existing log resumes from it.
    identity: JSON-able settings of the search (space, data, config); a resume must match them.
    fitness_key: the metric that is maximised.
    show_progress: show a progress bar.
    to_string: ``arch -> str``, stored as each record's ``genotype``.
    executor: ``"auto"`` (vmap for a jittable estimator, else serial), ``"serial"``, ``"vmap"``, ``"ray"``
      or an executor object (see the module docstring).
    objectives: :func:`nasjax.objectives.make_objectives` (metrics to maximise / minimise, constraints,
      weights); it replaces ``fitness_key``. The strategy is told the maximised objective vector
      (NSGA-II), the single objective, or their weighted sum; an infeasible evaluation is told NaN.
      Every record then holds ``objectives`` (raw values) and ``feasible``; the incumbent is the best
      feasible one by :meth:`Objectives.scalar`; the result has ``pareto`` (front and hypervolume).

  Returns:
    ``{"best": record, "history": [record, ...], "state": strategy state, "rounds": [...]}``; a record
    holds ``index``, ``arch``, ``metrics``, ``failed``, ``seconds`` (and ``error``, ``attempts``,
    ``genotype`` where known); ``rounds`` has one entry per ask / tell round (:func:`_round_record`: the
    mean reward, and a policy's baseline and entropy). The history and rounds of a resumed search equal
    those of an uninterrupted one (``seconds`` aside): logged rounds are replayed through the strategy.
  """
  if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
    raise NasjaxError(f"budget must be a positive number of evaluations, got {budget!r}")
  executor = resolve_executor(executor, estimator)
  if objectives is not None:
    strategy, fitness_key, metrics_known = _prepare_objectives(objectives, strategy, estimator, key)
  log_path = os.path.join(workdir, _LOG_NAME) if workdir else None
  if log_path:
    os.makedirs(workdir, exist_ok=True)
  done = _load_log(log_path) if log_path else []
  _check_identity(done, identity, log_path)
  if done and is_main_process():
    # One line, so a rerun after a kill is not mistaken for a fresh start: the logged evaluations are replayed.
    print(f"resuming: found {len(done)} evaluations in {log_path}; replaying them and going on from evaluation "
          f"{len(done) + 1}", file=sys.stderr, flush=True)
  init_key, loop_key = jax.random.split(key)
  state = strategy.init(init_key)
  # One compiled ask and tell for the whole search: run op by op, a policy's tell (the LSTM controller's
  # teacher-forced rollout) dispatches hundreds of small programs each round. A host-side strategy that
  # cannot be traced runs as it is.
  ask, tell = _jit_if_traceable(strategy.ask), _jit_if_traceable(strategy.tell)
  history: list[dict] = []
  rounds: list[dict] = []
  bar = progress(budget, f"search ({strategy.name})", show_progress)
  round_index = 0
  costs = planned_costs(strategy)
  multi_fidelity = getattr(strategy, "num_fidelities", 1) > 1
  if multi_fidelity and costs is None:
    raise NasjaxError(f"strategy {strategy.name!r} has {strategy.num_fidelities} fidelity levels but "
                      f"{len(strategy.fidelity_costs)} fidelity_costs; give one cost per level")
  spent = np.float32(0)  # full-training equivalents (see nasjax.strategies.budget); queries otherwise
  while admitted(spent, budget):
    ask_key, eval_key = jax.random.split(jax.random.fold_in(loop_key, round_index))
    asked, state = ask(state, ask_key)
    asked = np.asarray(asked)
    if asked.ndim != 2 or not len(asked):
      raise NasjaxError(f"strategy {strategy.name!r} asked for shape {asked.shape}; ask must return "
                        "int32[P, D] with P >= 1")
    if multi_fidelity:
      # The strategy chose a fidelity level per architecture; the estimator receives it as ``fidelity=``.
      # It travels as an extra last column so every executor (serial, vmap, Ray) carries it unchanged.
      levels = np.asarray(asked_fidelity(strategy, state, len(asked)), np.int32)
      query_costs = costs[levels]
      archs = np.concatenate([asked, levels[:, None]], axis=1)[:admitted_prefix(query_costs, spent, budget)]
      run_estimator = WithFidelity(estimator)
    else:
      archs = asked[:budget - len(history)]
      run_estimator = estimator
    start = len(history)
    batch: list[dict | None] = [None] * len(archs)
    pending = []
    for j, arch in enumerate(archs):
      i = start + j
      if i < len(done):
        if done[i]["arch"] != (arch[:-1] if multi_fidelity else arch).tolist():
          # The log diverged from this run (another key or strategy); never silently mix the two.
          raise NasjaxError(f"{log_path} does not match this search at evaluation {i}; use another --out")
        batch[j] = done[i]
        if objectives is not None:  # from these objectives, whatever the log was written with
          batch[j]["objectives"] = objectives.values(done[i]["metrics"])
          batch[j]["feasible"] = objectives.feasible(done[i]["metrics"])
        bar.update(1)
      else:
        pending.append(j)
    if pending:
      keys = [jax.random.fold_in(eval_key, j) for j in pending]
      outcomes = executor.evaluate(run_estimator, archs[pending], keys, fitness_key)
      try:
        stream = iter(outcomes)
        for j in pending:
          outcome = next(stream, None)
          if outcome is None:
            raise NasjaxError(f"executor {type(executor).__name__} returned fewer outcomes than the "
                              f"{len(pending)} architectures it was given")
          if multi_fidelity:
            batch[j] = _record(start + j, archs[j, :-1], outcome, identity, to_string, archs[j, -1])
          else:
            batch[j] = _record(start + j, archs[j], outcome, identity, to_string)
          if objectives is not None:
            if not metrics_known and not batch[j]["failed"]:
              objectives.check_metrics(batch[j]["metrics"], f"estimator {_estimator_name(estimator)}")
              metrics_known = True
            batch[j]["objectives"] = objectives.values(batch[j]["metrics"])
            batch[j]["feasible"] = objectives.feasible(batch[j]["metrics"])
          if log_path:
            with open(log_path, "a") as f:
              f.write(json.dumps(batch[j]) + "\n")
          bar.update(1)
      finally:
        _closing(outcomes)
    history.extend(batch)
    # Rows of the round beyond the budget were not evaluated: the strategy is told NaN for them, as on
    # the device (nasjax.parallel.run_on_device).
    if objectives is not None:
      fitness = np.full((len(asked), len(objectives.names)), np.nan, np.float32)
      for j, r in enumerate(batch):
        fitness[j] = objectives.fitness_row(r["metrics"], r["failed"])
      if strategy.num_objectives == 1:
        fitness = fitness[:, 0]
    else:
      fitness = np.full(len(asked), np.nan, np.float32)
      for j, r in enumerate(batch):
        if not r["failed"]:
          fitness[j] = r["metrics"].get(fitness_key, float("nan"))
    if multi_fidelity:
      for cost in query_costs[:len(batch)]:
        spent = np.float32(spent + cost)
    else:
      spent = np.float32(len(history))
    state = tell(state, jnp.asarray(asked), jnp.asarray(fitness))
    rounds.append(_round_record(round_index, len(history), fitness, state))
    round_index += 1
  bar.close()
  if objectives is not None:
    from nasjax.objectives import pareto_summary
    best = _objective_incumbent(history, objectives)
    if best is None:
      raise NasjaxError("every evaluation failed or violated a constraint "
                        f"({', '.join(map(str, objectives.constraints)) or 'none given'}); nothing to report")
    return {"best": best, "history": history, "state": jax.device_get(state), "rounds": rounds,
            "pareto": pareto_summary(history, objectives)}
  best = incumbent(history, fitness_key)
  if best is None:
    raise NasjaxError("every evaluation failed (NaN or Inf, or an error); nothing to report")
  return {"best": best, "history": history, "state": jax.device_get(state), "rounds": rounds}


_TRACE_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                 jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)


def _jit_if_traceable(fn: Callable) -> Callable:
  """``jax.jit(fn)``, or ``fn`` itself from the first call whose tracing needs concrete values (a strategy
  written with host control flow)."""
  jitted, traceable = jax.jit(fn), [True]

  def call(*args):
    if traceable[0]:
      try:
        return jitted(*args)
      except _TRACE_ERRORS:
        traceable[0] = False
    return fn(*args)
  return call


# Scalars of a strategy's state worth following round by round (the controller's and REINFORCE's policy).
_ROUND_STATE_KEYS = ("baseline", "entropy", "best_fitness")


def _round_record(index: int, evaluations: int, fitness, state) -> dict:
  """One ask / tell round: evaluations so far, the round's mean finite fitness (the policy's reward) and
  the strategy's scalar state entries (baseline, entropy, incumbent) after the tell."""
  fitness = np.asarray(fitness, np.float64)
  finite = fitness[np.isfinite(fitness)] if fitness.ndim == 1 else np.empty(0)
  record = {"round": index + 1, "evaluations": evaluations,
            "reward": float(finite.mean()) if finite.size else float("nan")}
  if isinstance(state, dict):
    for key in _ROUND_STATE_KEYS:
      if key in state and np.ndim(state[key]) == 0:
        record[key] = float(state[key])
  return record


def _prepare_objectives(objectives: Any, strategy: Strategy, estimator: Callable, key: jax.Array
                        ) -> tuple[Strategy, str, bool]:
  """Checks ``objectives`` against the strategy and the estimator before anything runs; returns the
  strategy to drive (scalarised where needed), the metric the executors check, and whether the
  estimator's metric names were known (else the first evaluation is checked)."""
  from nasjax.objectives import Objectives, metric_names
  if not isinstance(objectives, Objectives):
    raise NasjaxError("objectives must come from nasjax.objectives.make_objectives(...), e.g. "
                      "make_objectives(('accuracy:max', 'latency_s:min'))")
  if getattr(strategy, "num_fidelities", 1) > 1:
    raise NasjaxError(f"objectives are not supported with the multi-fidelity strategy {strategy.name}: its "
                      "levels compare one score; use a single-fidelity strategy (e.g. nsga2, random)")
  strategy = objectives.for_strategy(strategy)
  archs = jax.eval_shape(lambda k: strategy.ask(strategy.init(k), k)[0], key)
  produced = metric_names(estimator, archs.shape[-1])
  objectives.check_metrics(produced, f"estimator {_estimator_name(estimator)}")
  return strategy, objectives.names[0], produced is not None


def _objective_incumbent(records: list[dict], objectives: Any) -> dict | None:
  """The feasible, non-failed record with the largest :meth:`Objectives.scalar`, the earliest among ties."""
  best, best_value = None, -np.inf
  for record in records:
    if record["failed"] or not objectives.feasible(record["metrics"]):
      continue
    row = objectives.fitness_row(record["metrics"])
    value = objectives.scalar(row) if np.all(np.isfinite(row)) else -np.inf
    if value > best_value:
      best, best_value = record, value
  return best


class WithFidelity:
  """Calls ``estimator(arch, key, fidelity=level)`` for a row ``[*arch, level]`` (picklable for Ray)."""

  def __init__(self, estimator: Callable):
    self.estimator = estimator

  def __call__(self, row, key):
    return self.estimator(row[:-1], key, fidelity=row[-1])


def _record(index: int, arch: np.ndarray, outcome: Outcome, identity: dict | None,
            to_string: Callable | None, fidelity: int | None = None) -> dict:
  record = {"index": index, "arch": arch.tolist(), "metrics": outcome.metrics, "failed": bool(outcome.failed),
            "seconds": float(outcome.seconds)}
  if fidelity is not None:
    record["fidelity"] = int(fidelity)
  if outcome.error is not None:
    record["error"] = outcome.error
  if outcome.attempts != 1:
    record["attempts"] = int(outcome.attempts)
  if to_string is not None:
    record["genotype"] = to_string(arch)
  if index == 0 and identity is not None:
    record["identity"] = identity
  # What a resume reads back from the log, so fresh and resumed histories compare equal.
  return json.loads(json.dumps(record))
