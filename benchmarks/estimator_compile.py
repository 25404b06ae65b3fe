"""Seconds per candidate of a training-based discrete search: compile vs training, per candidate model.

Runs ``search.run(strategy, ShortTrainingEstimator(model=...), budget)`` on the embedded Fashion-MNIST
subset for each model (``network``: one program per candidate; ``supernet``: the supernet's discrete
path, one program for the whole search) and reports, from the per-candidate wall times of the log, the
first candidate's seconds (compilation + training), the median of the others (training only, as nothing
compiles again) and their difference (the compile paid by the first candidate and, for ``network``, by
every candidate). Prints one JSON object with the commit, the command and the machine.

    python benchmarks/estimator_compile.py --models network,supernet --budget 4 --strategy random
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np


def _commit() -> str:
  try:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)), check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--models", default="network,supernet")
  ap.add_argument("--budget", type=int, default=4)
  ap.add_argument("--strategy", default="random")
  ap.add_argument("--epochs", type=int, default=1)
  ap.add_argument("--channels", type=int, default=8)
  ap.add_argument("--layers", type=int, default=3)
  ap.add_argument("--train-subset", type=int, default=0)
  ap.add_argument("--learning-rate", type=float, default=None)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--json", default=None, help="also append the result to this file")
  args = ap.parse_args(argv)

  import jax
  from nasjax import data, search, spaces, strategies
  from nasjax.estimators.train import ShortTrainingEstimator, short_training_config

  dataset = data.load_dataset("embedded")
  space = spaces.get_space("darts")
  cfg = short_training_config()
  cfg.update(epochs=args.epochs, channels=args.channels, layers=args.layers, train_subset=args.train_subset,
             seed=args.seed)
  if args.learning_rate is not None:
    cfg.learning_rate = args.learning_rate
  rows = []
  for model in args.models.split(","):
    estimator = ShortTrainingEstimator(space, dataset, cfg, model=model)
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
  result = {"benchmark": "estimator_compile", "commit": _commit(), "command": " ".join(sys.argv),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpus": os.cpu_count(), "backend": jax.default_backend(),
                        "jax": jax.__version__},
            "date": time.strftime("%Y-%m-%d"), "settings": vars(args), "results": rows}
  print(json.dumps(result, indent=2))
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(result) + "\n")
  return result


if __name__ == "__main__":
  main()
