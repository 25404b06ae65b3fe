"""Multi-objective NAS-Bench-201 searches: accuracy against latency, NSGA-II beside random search.

    python benchmarks/nb201_pareto.py [--table ../shared/data/nb201/nb201.csv] [--seeds 100] [--budget 1000] \\
        [--population 50] [--no-seed-noise] [--json benchmarks/results/nb201_pareto_cpu_DATE.json]

Each search sees two objectives of the NB201 table (Dong & Yang, ICLR 2020): ``c10valid_valid_acc``
(maximised; by default one trained seed's value per query, as the paper's search protocol) and
``c10valid_latency_s`` (minimised), for ``--budget`` queries, ``--seeds`` seeds vmapped in one compiled
program (:func:`nasjax.parallel.pareto_search.run_pareto_on_device`). NSGA-II (Deb et al., IEEE TEVC
2002) with a population of ``--population`` is compared with random search of the same budget.

What is reported, per strategy, as mean and population std (ddof 0) over seeds:

* ``test_hv_ratio``: the front the search found (the non-dominated queries by what it saw: validation
  accuracy and latency) measured on ``cifar10_test_acc`` and latency, its hypervolume divided by that of
  the table's true test-accuracy/latency front. Reference point: the worst test accuracy (the largest test
  error) and the largest latency of the whole table, for both.
* ``valid_hv_ratio``: the same in the search's own objectives (validation mean accuracy and latency),
  against the table's true validation front.
* ``front_size`` and ``true_front_found``: members of the found front, and how many cells of the true
  test front were queried.

Timing: wall and CPU seconds (``time.process_time``, all threads of this process) of the compilation and
of the run of all seeds, separately. Prints one JSON object and writes it to ``--json`` with the commit,
the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

import provenance
from nasjax.errors import NasjaxError
from nasjax.estimators.tabular import NB201TabularEstimator, load_nb201_table
from nasjax.objectives import make_objectives
from nasjax.parallel.pareto_search import make_pareto_search
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import pareto
from nasjax.strategies.nsga2 import nsga2
from nasjax.strategies.random_search import random_search

DEFAULT_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "nb201",
                             "nb201.csv")


def summary(values) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def evaluate_seeds(history, table, est, reference: np.ndarray, true_hv: dict) -> dict:
  """Per-seed hypervolume ratios of the found fronts (see the module docstring)."""
  space = NB201Space()
  test = np.asarray(table.column("cifar10_test_acc"), np.float64)
  valid = np.asarray(table.column("c10valid_valid_acc"), np.float64)
  latency = np.asarray(table.column("c10valid_latency_s"), np.float64)
  index = np.asarray(jax.vmap(jax.vmap(space.arch_to_index))(history.archs))
  test_ratio, valid_ratio, sizes, found = [], [], [], []
  true_front = set(true_hv["test_front"].tolist())
  for s in range(index.shape[0]):
    ok = history.made[s] & history.feasible[s]
    # The front by what the search saw (its noisy validation values and the latency).
    seen = history.values[s][ok] * np.array([1.0, -1.0])
    queried = index[s][ok]
    members = np.unique(queried[pareto.pareto_mask_host(seen)])
    sizes.append(len(members))
    test_ratio.append(pareto.hypervolume(np.stack([test[members], -latency[members]], 1), reference["test"])
                      / true_hv["test"])
    valid_ratio.append(pareto.hypervolume(np.stack([valid[members], -latency[members]], 1), reference["valid"])
                       / true_hv["valid"])
    found.append(len(true_front & set(queried.tolist())))
  return {"test_hv_ratio": summary(test_ratio), "valid_hv_ratio": summary(valid_ratio),
          "front_size": summary(sizes), "true_front_found": summary(found)}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--table", default=os.path.normpath(DEFAULT_TABLE), help="the NB201 CSV (default ../shared/...)")
  ap.add_argument("--seeds", type=int, default=100)
  ap.add_argument("--budget", type=int, default=1000)
  ap.add_argument("--population", type=int, default=50, help="NSGA-II's mu (= lambda); random's batch")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--no-seed-noise", action="store_true", help="query seed means instead of one seed")
  ap.add_argument("--json", default=None,
                  help="result file (default benchmarks/results/nb201_pareto_<backend>_<date>.json)")
  args = ap.parse_args(argv)
  try:
    if args.seeds < 1 or args.budget < 1 or args.population < 2:
      raise NasjaxError("--seeds and --budget must be >= 1 and --population >= 2")
    t0 = time.perf_counter()
    table = load_nb201_table(args.table)
    load_s = time.perf_counter() - t0
  except NasjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  seed_noise = not args.no_seed_noise
  est = NB201TabularEstimator(table, "c10valid_valid_acc", seed_noise=seed_noise)
  test = np.asarray(table.column("cifar10_test_acc"), np.float64)
  valid = np.asarray(table.column("c10valid_valid_acc"), np.float64)
  latency = np.asarray(table.column("c10valid_latency_s"), np.float64)
  finite = np.isfinite(test) & np.isfinite(valid) & np.isfinite(latency)
  cells = np.flatnonzero(finite)
  reference = {"test": np.array([test[finite].min(), -latency[finite].max()]),
               "valid": np.array([valid[finite].min(), -latency[finite].max()])}
  test_rows = np.stack([test[cells], -latency[cells]], 1)
  test_front = cells[pareto.pareto_mask_host(test_rows)]
  true_hv = {"test": pareto.hypervolume(test_rows, reference["test"]),
             "valid": pareto.hypervolume(np.stack([valid[cells], -latency[cells]], 1), reference["valid"]),
             "test_front": test_front}
  space = NB201Space()
  keys = jax.random.split(jax.random.key(args.seed), args.seeds)  # the same seeds for both strategies
  runs = {"nsga2": (nsga2(space, population_size=args.population), make_objectives("accuracy:max,latency_s:min")),
          # Random search ignores what it is told; the weights only satisfy the single-objective contract.
          "random": (random_search(space, batch_size=args.population),
                     make_objectives("accuracy:max,latency_s:min", weights=(1.0, 0.0)))}
  report = {"benchmark": "nb201_pareto", **provenance.of(__file__, argv),
            "date": time.strftime("%Y-%m-%d"),
            # Relative to the repository: the result file names no machine's paths.
            "table": os.path.relpath(os.path.abspath(args.table), provenance.REPO),
            "table_load_s": load_s,
            "seeds": args.seeds, "budget": args.budget, "population": args.population, "seed_noise": seed_noise,
            "objectives": ["c10valid_valid_acc:max", "c10valid_latency_s:min"],
            "reference_point": {"cifar10_test_acc": float(reference["test"][0]),
                                "c10valid_latency_s": float(-reference["test"][1]),
                                "c10valid_valid_acc": float(reference["valid"][0])},
            "true_front": {"test_hv": true_hv["test"], "valid_hv": true_hv["valid"], "test_size": len(test_front)},
            "std": "population std over seeds (ddof=0)", "results": {}}
  for name, (strategy, objectives) in runs.items():
    search = make_pareto_search(strategy, est, objectives, args.budget)
    c0, w0 = time.process_time(), time.perf_counter()
    compiled = search.lower(keys).compile()
    c1, w1 = time.process_time(), time.perf_counter()
    history = jax.device_get(jax.block_until_ready(compiled(keys)))
    c2, w2 = time.process_time(), time.perf_counter()
    entry = evaluate_seeds(history, table, est, reference, true_hv)
    entry.update(compile_wall_s=w1 - w0, compile_cpu_s=c1 - c0, run_wall_s=w2 - w1, run_cpu_s=c2 - c1,
                 queries_per_seed=int(history.made.sum(axis=1).min()))
    report["results"][name] = entry
    r = entry["test_hv_ratio"]
    print(f"{name:>7}: test HV ratio {r['mean']:.4f} +- {r['std']:.4f}; run {w2 - w1:.2f} s wall, "
          f"{c2 - c1:.2f} s CPU (compile {w1 - w0:.1f} s wall)", file=sys.stderr, flush=True)
  text = json.dumps(report, indent=1, default=float)
  print(text)
  path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"nb201_pareto_{jax.default_backend()}_{report['date']}.json")
  with open(path, "w") as f:
    f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
