"""Simulated NAS-Bench-201 searches: every strategy x budget x data set, many seeds, on one device.

    python benchmarks/nb201_simulate.py --table ../shared/data/nb201/nb201.csv \\
        [--supplement ../shared/data/nb201/nb201_supplement_12ep_unverified.csv] --json OUT \\
        [--seeds 100] [--budgets 100,1000] [--strategies random,evolution,bo,reinforce,hyperband] \\
        [--datasets cifar10,cifar100,imagenet16] [--loop-seeds 3] [--no-seed-noise]

The protocol of the NAS-Bench-201 paper (Dong & Yang, ICLR 2020, section 5): a strategy searches on a data
set's validation accuracy (``c10valid_valid_acc``, ``c100_valid_acc_mean``, ``in16_valid_acc_mean``), by
default one trained seed's value per query, and we report the mean and standard deviation over seeds of
the test accuracy (``cifar10_test_acc``, ``cifar100_test_acc``, ``imagenet16_test_acc``) of the
architecture it returns. The budget counts queries, or full-training equivalents for multi-fidelity
strategies (see :mod:`nasjax.parallel.population`).

Timing: the vmapped search of all seeds (:func:`nasjax.parallel.run_on_device`, compile time reported
separately) next to the same algorithm driven from Python (``benchmarks/reference_loop.py``). The loop
is timed on ``--loop-seeds`` seeds after one warm-up seed (which pays its jit compilations) and scaled
linearly to all seeds; the JSON says so, and whether the loop's results equal the device's.

Strategies come from ``nasjax.strategies.get_strategy(name, space, **kwargs)`` (keyword arguments per
strategy with ``--strategy-args '{"hyperband": {...}}'``; Hyperband and successive halving get the table's
fidelity levels, ``resources=(12, 200)`` epochs with the supplement, unless given). If the registry is
missing, only ``random``
(``random_search``) runs. A strategy that cannot be built or run is reported with its error and the others
go on. Prints one JSON object and writes it to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.estimators.tabular import DATASETS, NB201TabularEstimator, load_nb201_table
from nasjax.parallel import check_results, make_device_search
from nasjax.spaces.nb201 import NB201Space

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_loop import run_loop  # noqa: E402  (a script beside this one, not part of the package)


def parse_list(text: str, what: str, accepted=None) -> list[str]:
  items = [t.strip() for t in text.split(",") if t.strip()]
  if not items:
    raise NasjaxError(f"--{what} needs at least one value")
  if accepted is not None:
    bad = [t for t in items if t not in accepted]
    if bad:
      raise NasjaxError(f"--{what}: unknown {', '.join(bad)}; accepted: {', '.join(accepted)}")
  return items


def parse_budgets(text: str) -> list[int]:
  out = []
  for t in parse_list(text, "budgets"):
    if not t.isdigit() or int(t) < 1:
      raise NasjaxError(f"--budgets: {t!r} is not a positive integer")
    out.append(int(t))
  return out


MULTI_FIDELITY = ("hyperband", "hb", "successive_halving", "sh")


def make_strategy(name: str, space, kwargs: dict, fidelity_epochs: tuple[int, ...]):
  try:
    from nasjax.strategies import get_strategy
  except ImportError:
    get_strategy = None
  if get_strategy is not None:
    if name.lower().replace("-", "_") in MULTI_FIDELITY and "resources" not in kwargs:
      # The strategy's fidelity levels are the table's: 12 and 200 epochs with the supplement.
      kwargs = {**kwargs, "resources": fidelity_epochs}
    return get_strategy(name, space, **kwargs)
  if name == "random":
    from nasjax.strategies import random_search
    return random_search(space, **kwargs)
  raise NasjaxError(f"strategy {name!r} is not available: nasjax.strategies has no get_strategy registry "
                    "yet (only 'random' runs without it)")


def summary(values: np.ndarray) -> dict:
  v = np.asarray(values, np.float64)
  ok = v[np.isfinite(v)]
  return {"mean": float(ok.mean()) if ok.size else None, "std": float(ok.std()) if ok.size else None,
          "n": int(ok.size)}


def curve(trajectory_test: np.ndarray, trajectory_budget: np.ndarray, budget: int) -> dict:
  """Mean incumbent test value once 1, 2, 5, 10, 20, 50, ... units of budget were spent (queries, or
  full-training equivalents for multi-fidelity strategies); seeds without an incumbent yet are left out."""
  points = sorted({q for e in range(0, 8) for q in (10 ** e, 2 * 10 ** e, 5 * 10 ** e) if q <= budget}
                  | {budget})
  out = {}
  for b in points:
    # The last query that ended within b units of budget (-1: none yet).
    last = np.array([np.searchsorted(row, np.float32(b), side="right") - 1 for row in trajectory_budget])
    values = np.where(last >= 0, trajectory_test[np.arange(len(last)), np.maximum(last, 0)], np.nan)
    values = values[np.isfinite(values)]
    out[str(b)] = float(values.mean()) if values.size else None
  return out


def run_one(strategy, est, budget: int, keys, loop_seeds: int) -> dict:
  search = make_device_search(strategy, est, budget, keys)
  t0 = time.perf_counter()
  compiled = search.lower(keys).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  res = jax.block_until_ready(compiled(keys))
  run_s = time.perf_counter() - t0
  res = check_results(jax.device_get(res), est, budget)
  num_seeds = keys.shape[0]
  out = {
      "test": summary(res.best_test), "fitness": summary(res.best_fitness),
      "test_curve_by_budget": curve(np.asarray(res.trajectory_test), np.asarray(res.trajectory_budget),
                                    budget),
      "queries_mean": float(np.mean(res.num_queries)), "failed_mean": float(np.mean(res.num_failed)),
      "budget_spent_mean": float(np.mean(res.budget_spent)),
      "simulated_train_hours_mean": float(np.mean(res.cost)) / 3600.0,
      "best_fidelity": sorted({int(v) for v in res.best_fidelity}),
      "device": {"compile_s": compile_s, "run_s": run_s, "seeds": num_seeds},
  }
  # The loop: one warm-up seed (jit compilations), then timed seeds, scaled to all seeds.
  timed = max(0, min(loop_seeds, num_seeds - 1))
  t0 = time.perf_counter()
  first = run_loop(strategy, est, budget, keys[:1])
  warm_s = time.perf_counter() - t0
  if timed:
    t0 = time.perf_counter()
    rest = run_loop(strategy, est, budget, keys[1:1 + timed])
    per_seed = (time.perf_counter() - t0) / timed
  else:
    rest, per_seed = None, warm_s
  parts = [first] + ([rest] if rest is not None else [])
  loop = type(first)(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in first._fields))
  n = 1 + timed
  matches = all(np.array_equal(np.asarray(getattr(loop, f)), np.asarray(getattr(res, f))[:n], equal_nan=True)
                for f in res._fields)
  estimate = per_seed * num_seeds
  out["loop"] = {"warmup_seed_s_incl_compile": warm_s, "seeds_timed": timed, "s_per_seed": per_seed,
                 "estimated_s_all_seeds": estimate, "scaled_from_timed_seeds": timed < num_seeds,
                 "results_equal_device_on_seeds": n if matches else False}
  out["speedup_loop_over_device_run"] = estimate / run_s if run_s > 0 else None
  out["speedup_incl_compile"] = estimate / (run_s + compile_s)
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--table", required=True)
  ap.add_argument("--supplement", default=None)
  ap.add_argument("--json", required=True, dest="json_out")
  ap.add_argument("--seeds", type=int, default=100)
  ap.add_argument("--budgets", default="100,1000")
  ap.add_argument("--strategies", default="random,evolution,bo,reinforce,hyperband")
  ap.add_argument("--datasets", default="cifar10,cifar100,imagenet16")
  ap.add_argument("--loop-seeds", type=int, default=3, help="seeds timed in the Python loop (after 1 warm-up)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--no-seed-noise", action="store_true", help="query seed means instead of one seed")
  ap.add_argument("--strategy-args", default="{}", help='JSON: {"name": {kwarg: value}}')
  args = ap.parse_args(argv)
  try:
    if args.seeds < 1 or args.loop_seeds < 0:
      raise NasjaxError("--seeds must be >= 1 and --loop-seeds >= 0")
    budgets = parse_budgets(args.budgets)
    strategies = parse_list(args.strategies, "strategies")
    datasets = parse_list(args.datasets, "datasets", tuple(DATASETS))
    strategy_args = json.loads(args.strategy_args)
    if not isinstance(strategy_args, dict) or not all(isinstance(v, dict) for v in strategy_args.values()):
      raise NasjaxError('--strategy-args must be a JSON object like {"hyperband": {"eta": 3}}')
    t0 = time.perf_counter()
    table = load_nb201_table(args.table, args.supplement)
    load_s = time.perf_counter() - t0
  except (NasjaxError, json.JSONDecodeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  space = NB201Space()
  keys = jax.random.split(jax.random.key(args.seed), args.seeds)  # the same seeds for every strategy
  seed_noise = not args.no_seed_noise
  report = {
      "benchmark": "nb201_simulate", "table": args.table, "supplement": args.supplement,
      "table_load_s": load_s, "seeds": args.seeds, "budgets": budgets, "seed_noise": seed_noise,
      "std": "population std over seeds (ddof=0)",
      "budget_unit": "queries; full-training (200-epoch) equivalents for multi-fidelity strategies",
      "jax": jax.__version__, "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
      "optimum": {d: table.optimum(DATASETS[d].fitness) for d in datasets},
      "results": [],
  }
  for name in strategies:
    try:
      levels = NB201TabularEstimator(table).fidelity_epochs
      strategy = make_strategy(name, space, strategy_args.get(name, {}), levels)
    except Exception as e:  # noqa: BLE001 -- a missing or broken strategy must not stop the others
      report["results"].append({"strategy": name, "error": f"{type(e).__name__}: {e}"})
      print(f"skipping {name}: {e}", file=sys.stderr)
      continue
    for dataset in datasets:
      est = NB201TabularEstimator(table, DATASETS[dataset].fitness, seed_noise=seed_noise)
      for budget in budgets:
        entry = {"strategy": name, "dataset": dataset, "budget": budget,
                 "fitness_column": est.columns.fitness, "test_column": est.columns.test}
        try:
          entry.update(run_one(strategy, est, budget, keys, args.loop_seeds))
        except Exception as e:  # noqa: BLE001 -- reported in the JSON, the other runs go on
          entry["error"] = f"{type(e).__name__}: {e}"
        report["results"].append(entry)
        t = entry.get("test", {})
        print(f"{name:>10} {dataset:>10} budget {budget:>5}: "
              + (f"test {t['mean']:.2f} +- {t['std']:.2f}" if t.get("mean") is not None
                 else entry.get("error", "no result")), file=sys.stderr, flush=True)
  text = json.dumps(report, indent=1, default=float)
  print(text)
  with open(args.json_out, "w") as f:
    f.write(text + "\n")
  return 0 if any("error" not in r for r in report["results"]) else 1


if __name__ == "__main__":
  sys.exit(main())
