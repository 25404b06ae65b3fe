"""Cost of the second-order DARTS step relative to the first-order one, in one process (ratios only).

The issue's goal: the exact second-order step (forward-over-reverse Hessian-vector product) at most 2x the
first-order step; the paper's finite difference costs about 3x. A small cell space keeps the four compiles
short on a CPU:

    python benchmarks/hypergradient_cost.py [--modes first,jvp,unroll,finite_difference] [--steps 7]

Prints one JSON object: median / min seconds per step and compile seconds per mode, and each ratio to first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import numpy as np

from nasjax.oneshot.search import Search, search_config
from nasjax.spaces.cells import CellSpace


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--modes", default="first,jvp,unroll,finite_difference")
  ap.add_argument("--channels", type=int, default=8)
  ap.add_argument("--layers", type=int, default=3)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--size", type=int, default=16)
  ap.add_argument("--steps", type=int, default=7)
  args = ap.parse_args(argv)
  space = CellSpace("small", ("skip_connect", "conv_1x1", "avg_pool_3x3", "sep_conv_3x3"), 3, True)
  rng = np.random.default_rng(0)
  x = rng.random((args.batch, args.size, args.size, 3), np.float32)
  y = np.arange(args.batch, dtype=np.int32) % 10
  out = {"backend": jax.default_backend(), "channels": args.channels, "layers": args.layers,
         "batch": args.batch, "modes": {}}
  for mode in args.modes.split(","):
    cfg = search_config("darts")
    cfg.update(channels=args.channels, layers=args.layers, batch_size=args.batch,
               order=1 if mode == "first" else 2, hessian="jvp" if mode == "first" else mode)
    search = Search(cfg, space, (args.size, args.size, 3), 10, (0.5,) * 3, (0.25,) * 3, 100)
    state = search.init_state(0)
    t0 = time.perf_counter()
    step = jax.jit(search._step).lower(state, x, y, x, y).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = step(state, x, y, x, y)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      state, metrics = step(state, x, y, x, y)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t0)
    out["modes"][mode] = {"median_s": statistics.median(times), "min_s": min(times), "compile_s": compile_s}
  if "first" in out["modes"]:
    base = out["modes"]["first"]
    for m in out["modes"].values():
      m["ratio_to_first_median"] = m["median_s"] / base["median_s"]
      m["ratio_to_first_min"] = m["min_s"] / base["min_s"]
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
