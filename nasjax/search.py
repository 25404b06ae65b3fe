"""The one driver: a strategy, an estimator and a budget give a search, logged and resumable.

Every evaluation is appended to ``workdir/evaluations.jsonl`` as soon as it finishes. Because a strategy is
pure (its state is a function of the key and the fitness values told so far), that log is the checkpoint:
a resumed search re-asks with the same keys and takes the logged fitness for every evaluation already
done, so it reaches exactly the state of an uninterrupted run without re-training anything.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.strategies.base import Strategy
from nasjax.utils.logging import progress


def _read_log(path: str) -> list[dict]:
  records = []
  if not os.path.exists(path):
    return records
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break  # a line cut by a killed process: everything after it is redone
  return records


def run(strategy: Strategy, estimator: Callable, budget: int, key: jax.Array, *, workdir: str | None = None,
        identity: dict | None = None, fitness_key: str = "accuracy", show_progress: bool = True,
        to_string: Callable | None = None) -> dict:
  """Runs ``strategy`` until ``budget`` architectures have been evaluated; returns the best and history."""
  log_path = os.path.join(workdir, "evaluations.jsonl") if workdir else None
  done = _read_log(log_path) if log_path else []
  if done and identity is not None and done[0].get("identity") != json.loads(json.dumps(identity)):
    raise NasjaxError(f"{log_path} was written by another search (different settings); resume with the "
                      "same settings or use another --out directory")
  init_key, loop_key = jax.random.split(key)
  state = strategy.init(init_key)
  history: list[dict] = []
  bar = progress(budget, f"search ({strategy.name})", show_progress)
  round_index = 0
  while len(history) < budget:
    ask_key, eval_key = jax.random.split(jax.random.fold_in(loop_key, round_index))
    archs, state = strategy.ask(state, ask_key)
    archs = np.asarray(archs)[:budget - len(history)]
    fitness = []
    for j, arch in enumerate(archs):
      i = len(history)
      if i < len(done) and done[i]["arch"] == arch.tolist():
        record = done[i]
      else:
        t0 = time.perf_counter()
        try:
          metrics = estimator(jnp.asarray(arch), jax.random.fold_in(eval_key, j))
          failed = not math.isfinite(float(metrics.get(fitness_key, float("nan"))))
        except NasjaxError as e:
          if "became nan" not in str(e) and "became inf" not in str(e):
            raise
          metrics, failed = {"error": str(e)}, True
        record = {"index": i, "arch": arch.tolist(), "metrics": metrics, "failed": failed,
                  "seconds": time.perf_counter() - t0}
        if to_string is not None:
          record["genotype"] = to_string(arch)
        if i == 0 and identity is not None:
          record["identity"] = identity
        if log_path:
          if i < len(done):
            # The log diverged from this run (e.g. a changed estimator); never silently mix the two.
            raise NasjaxError(f"{log_path} does not match this search at evaluation {i}; use another --out")
          with open(log_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
      history.append(record)
      value = record["metrics"].get(fitness_key, float("nan")) if not record["failed"] else float("nan")
      fitness.append(value)
      bar.update(1)
    state = strategy.tell(state, jnp.asarray(archs), jnp.asarray(fitness, jnp.float32))
    round_index += 1
  bar.close()
  ok = [r for r in history if not r["failed"]]
  if not ok:
    raise NasjaxError("every evaluation failed (NaN or Inf); nothing to report")
  best = max(ok, key=lambda r: r["metrics"][fitness_key])
  return {"best": best, "history": history, "state": jax.device_get(state)}
