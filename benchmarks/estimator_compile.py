"""Seconds per candidate of a training-based discrete search: compile vs training, per candidate model.

Runs ``search.run(strategy, ShortTrainingEstimator(model=...), budget)`` on the embedded Fashion-MNIST
subset for each model (``network``: one program per candidate; ``supernet``: the supernet's discrete
path, one program for the whole search) and reports, from the per-candidate wall times of the log, the
first candidate's seconds (compilation + training), the median of the others (training only, as nothing
compiles again) and their difference (the compile paid by the first candidate and, for ``network``, by
every candidate). Prints one JSON object with the commit, the command and the machine.

``--parts`` instead splits one candidate's fixed costs in CPU seconds of this process (initialisation,
tracing + lowering and compilation of the train and eval steps) and times the train step, per model:
CPU time is far less disturbed by other work on a shared machine than wall time, and these are the
figures behind the cost model of ``nasjax.estimators.train.choose_model``.

A model ``supernet:edge`` or ``supernet:node`` picks the shared network behind ``supernet`` (the edge
supernet's discrete path or the node-based ``SharedCellNetwork``; ``supernet`` alone: the estimator's
default, node); ``--space`` picks the cell space (darts, nasnet, enas_micro).

    python benchmarks/estimator_compile.py --models network,supernet --budget 4 --strategy random
    python benchmarks/estimator_compile.py --parts
    python benchmarks/estimator_compile.py --parts --models supernet:edge,supernet:node
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np

import provenance


def _estimator(model: str, space, dataset, cfg):
  """The estimator of a ``--models`` entry: ``network``, ``supernet`` or ``supernet:edge|node``."""
  from nasjax.estimators.train import ShortTrainingEstimator
  model, _, shared = model.partition(":")
  return ShortTrainingEstimator(space, dataset, cfg, model=model, shared_network=shared or "node")


def _parts(model: str, cfg, dataset, space, steps: int = 8) -> dict:
  """CPU seconds of one candidate's fixed costs and of a train step, for ``model``."""
  import jax
  import jax.numpy as jnp
  from nasjax import train as T

  cpu = time.process_time
  estimator = _estimator(model, space, dataset, cfg)
  arch = space.sample(jax.random.key(cfg.seed))
  tx = T.make_optimizer(cfg, estimator.steps_per_epoch)
  candidate = estimator.builder(np.asarray(arch))
  model_init, model_fn, extra = candidate.init, candidate.model_fn, candidate.extra
  t = cpu()
  state = T.init_state(model_init, tx, cfg.seed, extra=extra)
  init_s = cpu() - t
  train_step = T.make_train_step(model_fn, tx, cfg, dataset.mean, dataset.std)
  eval_step = T.make_eval_step(model_fn, dataset.mean, dataset.std)
  x = jnp.asarray(estimator.data[0][:cfg.batch_size])
  y = jnp.asarray(estimator.data[1][:cfg.batch_size])
  xe = jnp.asarray(estimator.data[2][:cfg.eval_batch_size])
  ye = jnp.asarray(estimator.data[3][:cfg.eval_batch_size])
  t = cpu()
  lowered = train_step.lower(state, x, y, jnp.float32(0))
  lower_s = cpu() - t
  t = cpu()
  compiled = lowered.compile()
  compile_s = cpu() - t
  t = cpu()
  eval_step.lower(state, xe, ye, jnp.ones(len(xe), jnp.float32)).compile()
  eval_s = cpu() - t
  for _ in range(2):
    state, metrics = compiled(state, x, y, jnp.float32(0))
    jax.block_until_ready(metrics)
  cpu_s, wall_s = [], []
  for _ in range(steps):
    t, w = cpu(), time.perf_counter()
    state, metrics = compiled(state, x, y, jnp.float32(0))
    jax.block_until_ready(metrics)
    cpu_s.append(cpu() - t)
    wall_s.append(time.perf_counter() - w)
  fixed = init_s + lower_s + compile_s + eval_s
  step = float(np.median(cpu_s))
  return {"model": model, "init_cpu_s": round(init_s, 2), "train_lower_cpu_s": round(lower_s, 2),
          "train_compile_cpu_s": round(compile_s, 2), "eval_lower_compile_cpu_s": round(eval_s, 2),
          "fixed_cpu_s": round(fixed, 2), "step_cpu_s": round(step, 4),
          "step_wall_s": round(float(np.median(wall_s)), 4), "fixed_in_steps": round(fixed / step, 1)}


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", default="network,supernet")
  ap.add_argument("--space", default="darts", help="darts, nasnet or enas_micro")
  ap.add_argument("--budget", type=int, default=4)
  ap.add_argument("--strategy", default="random")
  ap.add_argument("--epochs", type=int, default=1)
  ap.add_argument("--channels", type=int, default=8)
  ap.add_argument("--layers", type=int, default=3)
  ap.add_argument("--train-subset", type=int, default=0)
  ap.add_argument("--learning-rate", type=float, default=None)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--batch-size", type=int, default=None)
  ap.add_argument("--parts", action="store_true", help="CPU seconds of one candidate's fixed costs and step")
  ap.add_argument("--json", default=None, help="also append the result to this file")
  args = ap.parse_args(argv)

  import jax
  from nasjax import data, search, spaces, strategies
  from nasjax.estimators.train import short_training_config

  dataset = data.load_dataset("embedded")
  space = spaces.get_space(args.space)
  cfg = short_training_config()
  cfg.update(epochs=args.epochs, channels=args.channels, layers=args.layers, train_subset=args.train_subset,
             seed=args.seed)
  if args.learning_rate is not None:
    cfg.learning_rate = args.learning_rate
  if args.batch_size is not None:
    cfg.batch_size = args.batch_size
  rows = []
  for model in args.models.split(","):
    if args.parts:
      rows.append(_parts(model, cfg, dataset, space))
      print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
      continue
    estimator = _estimator(model, space, dataset, cfg)
    strategy = strategies.get_strategy(args.strategy, space)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
      out = search.run(strategy, estimator, args.budget, jax.random.key(args.seed), workdir=tmp,
                       show_progress=False, to_string=space.to_string, executor="serial")
    total = time.perf_counter() - t0
    seconds = [r["seconds"] for r in out["history"]]
    training = float(np.median(seconds[1:])) if len(seconds) > 1 else float("nan")
    accs = [r["metrics"]["accuracy"] for r in out["history"] if not r["failed"]]
    rows.append({"model": model, "candidates": len(seconds), "total_s": round(total, 2),
                 "first_s": round(seconds[0], 2), "median_other_s": round(training, 2),
                 "compile_s_first": round(seconds[0] - training, 2),
                 "seconds_per_candidate": round(total / len(seconds), 2),
                 "best_accuracy": max(accs) if accs else None, "mean_accuracy": float(np.mean(accs)),
                 "per_candidate_s": [round(s, 2) for s in seconds]})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  result = {"benchmark": "estimator_compile", **provenance.of(__file__, argv),
            "date": time.strftime("%Y-%m-%d"), "settings": vars(args), "results": rows}
  print(json.dumps(result, indent=2))
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(result) + "\n")
  return result


if __name__ == "__main__":
  main()
