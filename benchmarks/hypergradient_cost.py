"""Cost of the second-order DARTS step relative to the first-order one, in one process (ratios only).

The issue's goal: the exact second-order step (forward-over-reverse Hessian-vector product) at most 2x the
first-order step; the paper's finite difference costs about 3x. A small cell space keeps the four compiles
short on a CPU:

    python benchmarks/hypergradient_cost.py [--modes first,jvp,unroll,finite_difference] [--steps 7]

Prints one JSON object: median / min seconds per step, compile seconds and XLA's count of floating-point
operations per mode, and each ratio to first. The count says what any machine would pay: on 2026-11-27
(defaults) jvp_recompute 2.89x first, jvp 2.70x, the paper's finite difference 2.61x. Five passes against
two bound the exact hypergradient: grad_w L_train for the virtual step, grad L_val at w', the
Hessian-vector product (a forward-over-reverse pass: about two), and the weight step, so ~2.5x is the
floor of this formulation; taking the tangent of grad_alpha alone instead of (grad_w, grad_alpha) changed
nothing (XLA already drops the unused half).
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
    # XLA's own count of the compiled step: noise-free, so the ratios hold on a busy machine too. A
    # loop body counts once, the same in every mode (the edge and cell loops are the same in all).
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    state, metrics = step(state, x, y, x, y)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      state, metrics = step(state, x, y, x, y)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t0)
    out["modes"][mode] = {"median_s": statistics.median(times), "min_s": min(times), "compile_s": compile_s,
                          "xla_flops": (cost or {}).get("flops"), "xla_bytes": (cost or {}).get("bytes accessed")}
  if "first" in out["modes"]:
    base = out["modes"]["first"]
    for m in out["modes"].values():
      m["ratio_to_first_median"] = m["median_s"] / base["median_s"]
      m["ratio_to_first_min"] = m["min_s"] / base["min_s"]
      if m["xla_flops"] and base["xla_flops"]:
        m["flops_ratio_to_first"] = m["xla_flops"] / base["xla_flops"]
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
