"""RL controllers on the NAS-Bench-201 table: NAS-RL's LSTM controller beside REINFORCE and regularized evolution.

    python benchmarks/nb201_controllers.py [--table ../shared/data/nb201/nb201.csv] [--seeds 100] \\
        [--budget 1000] [--strategies nasrl,enas_controller,reinforce,regularized_evolution,random] \\
        [--no-seed-noise] [--json benchmarks/results/nb201_controllers_cpu_DATE.json]

Run from the repository root. The protocol of the NAS-Bench-201 paper (Dong & Yang, ICLR 2020, section 5):
each search queries ``c10valid_valid_acc`` (by default one trained seed's value per query, drawn with the
query's key) for ``--budget`` queries, and we report the ``cifar10_test_acc`` of the architecture it returns
(the incumbent by what it saw), mean and population std (ddof 0) over ``--seeds`` seeds, all seeds vmapped
in one compiled program (:func:`nasjax.parallel.make_device_search`, the program behind ``run_on_device``).

Strategies (``nasjax.strategies``), each with the options recorded in the result:

* ``nasrl``: the LSTM controller with NAS-RL's settings (Zoph & Le, ICLR 2017;
  :func:`~nasjax.strategies.controller.nasrl_settings`: 35 hidden units, Adam 0.0006, no sharpening), one
  policy step per batch of 10 children (the strategy's default batch).
* ``enas_controller``: the same controller with ENAS's defaults (Pham et al., ICML 2018: LSTM 64, Adam
  0.0035, temperature 5, tanh constant 1.1, entropy weight 1e-4) and one head shared by every op decision.
  (Before the controller's LSTM stopped using an orthogonal init, whose batched QR deadlocked XLA:CPU's
  intra-op pool in jaxlib 0.10 (see ``Policy.__init__``), its vmapped search of 4 or 100 seeds x 50 or more
  queries never returned, and it was left out of the default list.)
* ``reinforce``: nasjax's factorised categorical policy, the REINFORCE baseline of the NB201 paper.
* ``regularized_evolution`` (Real et al., AAAI 2019) and ``random``: the registry's defaults, as in
  ``benchmarks/nb201_simulate.py``.

Timing: wall and CPU seconds (``time.process_time``: every thread of this process) of the compilation and of
the run of all seeds, separately. Prints one JSON object and writes it to ``--json`` with the commit, the
command and the machine.
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
from nasjax.parallel import check_results, make_device_search
from nasjax.spaces.nb201 import NB201Space
from nasjax.strategies import get_strategy
from nasjax.strategies.controller import nasrl_settings

DEFAULT_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "nb201",
                             "nb201.csv")
# name -> (registry strategy, options)
STRATEGIES = {
    "nasrl": ("controller", nasrl_settings()),
    "enas_controller": ("controller", {"shared_heads": True}),
    "reinforce": ("reinforce", {}),
    "regularized_evolution": ("regularized_evolution", {}),
    "random": ("random", {}),
}
DEFAULT_STRATEGIES = tuple(STRATEGIES)
# Query counts at which the incumbent's test accuracy is reported along the search.
CURVE_POINTS = (10, 50, 100, 200, 500, 1000)


def summary(values) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def parse_strategies(text: str) -> list[str]:
  names = [t.strip() for t in text.split(",") if t.strip()]
  bad = [n for n in names if n not in STRATEGIES]
  if not names or bad:
    raise NasjaxError(f"--strategies: unknown {', '.join(bad) or '(none given)'}; accepted: {', '.join(STRATEGIES)}")
  return names


def run_one(name: str, est, budget: int, keys) -> dict:
  registry_name, options = STRATEGIES[name]
  strategy = get_strategy(registry_name, NB201Space(), **options)
  search = make_device_search(strategy, est, budget, keys)
  c0, w0 = time.process_time(), time.perf_counter()
  compiled = search.lower(keys).compile()
  c1, w1 = time.process_time(), time.perf_counter()
  results = jax.device_get(jax.block_until_ready(compiled(keys)))
  c2, w2 = time.process_time(), time.perf_counter()
  results = check_results(results, est, budget)
  curve = np.asarray(results.trajectory_test, np.float64)
  return {"strategy": registry_name, "options": options,
          "cifar10_test_acc": summary(results.best_test), "c10valid_valid_acc_seen": summary(results.best_fitness),
          "test_curve_by_queries": {str(q): float(curve[:, q - 1].mean()) for q in CURVE_POINTS if q <= budget},
          "queries_per_seed": int(np.min(results.num_queries)), "failed_mean": float(np.mean(results.num_failed)),
          "compile_wall_s": w1 - w0, "compile_cpu_s": c1 - c0, "run_wall_s": w2 - w1, "run_cpu_s": c2 - c1}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--table", default=os.path.normpath(DEFAULT_TABLE), help="the NB201 CSV (default ../shared/...)")
  ap.add_argument("--seeds", type=int, default=100)
  ap.add_argument("--budget", type=int, default=1000)
  ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                  help="comma-separated: " + ", ".join(STRATEGIES) + " (default: all)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--no-seed-noise", action="store_true", help="query seed means instead of one seed")
  ap.add_argument("--json", default=None,
                  help="result file (default benchmarks/results/nb201_controllers_<backend>_<date>.json)")
  args = ap.parse_args(argv)
  try:
    if args.seeds < 1 or args.budget < 1:
      raise NasjaxError("--seeds and --budget must be positive integers")
    names = parse_strategies(args.strategies)
    t0 = time.perf_counter()
    table = load_nb201_table(args.table)
    load_s = time.perf_counter() - t0
  except NasjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  seed_noise = not args.no_seed_noise
  est = NB201TabularEstimator(table, "c10valid_valid_acc", seed_noise=seed_noise)
  keys = jax.random.split(jax.random.key(args.seed), args.seeds)  # the same seeds for every strategy
  test = np.asarray(table.column("cifar10_test_acc"), np.float64)
  report = {"benchmark": "nb201_controllers", **provenance.of(__file__, argv),
            "date": time.strftime("%Y-%m-%d"),
            # Relative to the repository: the result file names no machine's paths.
            "table": os.path.relpath(os.path.abspath(args.table), provenance.REPO),
            "table_load_s": load_s, "seeds": args.seeds, "budget": args.budget, "seed_noise": seed_noise,
            "fitness": "c10valid_valid_acc", "reported": "cifar10_test_acc of the incumbent",
            "optimum_cifar10_test_acc": float(np.nanmax(test)),
            "std": "population std over seeds (ddof=0)", "results": {}}
  for name in names:
    entry = run_one(name, est, args.budget, keys)
    report["results"][name] = entry
    r = entry["cifar10_test_acc"]
    print(f"{name:>22}: test {r['mean']:.2f} +- {r['std']:.2f}; run {entry['run_wall_s']:.2f} s wall, "
          f"{entry['run_cpu_s']:.2f} s CPU; compile {entry['compile_wall_s']:.1f} s wall, "
          f"{entry['compile_cpu_s']:.1f} s CPU", file=sys.stderr, flush=True)
  text = json.dumps(report, indent=1, default=float)
  print(text)
  path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"nb201_controllers_{jax.default_backend()}_{report['date']}.json")
  with open(path, "w") as f:
    f.write(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
