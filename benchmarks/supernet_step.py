"""Times one DARTS search-supernet step in nasjax and, in the same run, in the PyTorch reference.

The setting of the DARTS search phase (Liu et al. 2019): 16 initial channels, 8 cells, all 8 ops on all 14
edges, batch 64, 32x32x3 inputs, 10 classes. Prints one JSON line per (implementation, mode):

    python benchmarks/supernet_step.py --modes eval,weights \
        --torch-python .venv-torch/bin/python --reference ../shared/reference/torch_darts_step.py

Modes: ``eval`` (forward with running BN statistics), ``weights`` (forward, backward, clipped SGD with
momentum and weight decay on the weights, with softmax architecture weights as in DARTS), ``first`` and
``second`` (a whole DARTS search step of :mod:`nasjax.oneshot`: the architecture step, first order or with
the exact second-order hypergradient, then the weight step; the reference uses the paper's finite
difference for ``second``). ``--method pcdarts --batch 256`` measures a PC-DARTS step. Every measurement
runs in its own process, so ``peak_rss_mib`` is that step's own peak memory. ``--profile DIR`` traces a
few more steps and adds the device time per XLA op, with the JAX source of each (``trace_summary.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax import xla_workarounds
from nasjax.nn.ops import Impl
from nasjax.nn.supernet import DARTS_SUPERNET_OPS, Supernet, num_edges
from nasjax.train import init_key
from nasjax.utils.jit import compiler_options, jit_with_options


def make_step(net: Supernet, mode: str):
  # One flat vector, as nasjax.oneshot.search's weight optimizer.
  weight_opt = optax.flatten(optax.chain(optax.clip_by_global_norm(5.0), optax.add_decayed_weights(3e-4),
                                         optax.sgd(0.025, momentum=0.9)))

  def loss_fn(params, batch_stats, alphas, x, y):
    arch = {k: jax.nn.softmax(a, axis=-1) for k, a in alphas.items()}
    logits, updates = net.apply({"params": params, "batch_stats": batch_stats}, x, arch, train=True,
                                mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, updates["batch_stats"]

  if mode == "eval":
    def step(state, x, y):
      del y
      arch = {k: jax.nn.softmax(a, axis=-1) for k, a in state["alphas"].items()}
      logits = net.apply({"params": state["params"], "batch_stats": state["batch_stats"]}, x, arch,
                         train=False)
      return state, logits.sum()
  elif mode == "weights":
    def step(state, x, y):
      (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          state["params"], state["batch_stats"], state["alphas"], x, y)
      updates, opt_state = weight_opt.update(grads, state["opt"], state["params"])
      params = optax.apply_updates(state["params"], updates)
      return dict(state, params=params, batch_stats=batch_stats, opt=opt_state), loss
  else:
    raise SystemExit(f"unknown mode {mode!r}")
  return jit_with_options(step, donate_argnums=(0,)), weight_opt


def run_nasjax_search_step(mode: str, args) -> dict:
  """``first`` / ``second``: one step of :class:`nasjax.oneshot.search.Search` (architecture step on a
  validation batch, then the weight step), exactly what ``nasjax search --method darts`` runs."""
  from nasjax.oneshot.search import Search, search_config
  from nasjax.spaces import darts_space
  cfg = search_config(args.method)
  cfg.update(channels=args.C, layers=args.layers, batch_size=args.batch, order=2 if mode == "second" else 1,
             hessian=args.hessian, dw_impl=args.dw_impl, edge_loop=args.edge_loop, remat_edges=args.remat_edges,
             arch_warmup_epochs=0)
  if args.partial_channels:
    cfg.partial_channels = args.partial_channels
  search = Search(cfg, darts_space(), (32, 32, 3), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 1000)
  t0 = time.perf_counter()
  state = search.init_state(0)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  rng = np.random.default_rng(0)
  xt, xv = (rng.random((args.batch, 32, 32, 3), np.float32) for _ in range(2))
  yt, yv = (np.arange(args.batch, dtype=np.int32) % 10 for _ in range(2))
  compiled, compile_times = _compile(jit_with_options(search._step, donate_argnums=(0,)), state, xt, yt, xv, yv)
  params = sum(p.size for p in jax.tree.leaves(state["params"]))
  step = lambda st: compiled(st, xt, yt, xv, yv)
  return _time(step, state, args, compiled) | _hlo_stats(compiled, args) | compile_times | {
      "init_s": round(init_s, 2), "params": params, "method": args.method, "hessian": args.hessian}


def _compile(jitted, *args):
  """``jitted.lower(*args).compile()``, with the time of all of it and of tracing + lowering alone."""
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  lower_s = time.perf_counter() - t0
  compiled = lowered.compile()
  return compiled, {"compile_s": round(time.perf_counter() - t0, 2), "trace_lower_s": round(lower_s, 2)}


def _hlo_stats(compiled, args) -> dict:
  if not args.hlo_stats:
    return {}
  from hlo_stats import kernel_stats
  return {"hlo": kernel_stats(compiled.as_text())}


def _time(step, state, args, compiled=None) -> dict:
  for _ in range(args.warmup):
    state, out = step(state)
    jax.block_until_ready(out)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, out = step(state)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  out = {"median_s_per_step": round(med, 4), "min_s_per_step": round(min(times), 4),
         "images_per_s": round(args.batch / med, 2)}
  if args.profile:
    try:
      out["profile"] = _profile(step, state, args, compiled)
    except Exception as e:  # noqa: BLE001 - a machine without a working profiler still gets its timings
      out["profile"] = {"error": f"{type(e).__name__}: {e}"}
  return out


def _profile(step, state, args, compiled) -> dict:
  """Traces ``--profile-steps`` more steps into ``--profile`` and sums the device time by XLA op."""
  import gzip
  from trace_summary import summarize
  os.makedirs(args.profile, exist_ok=True)
  hlo = compiled.as_text() if compiled is not None else None
  if hlo:
    with gzip.open(os.path.join(args.profile, "module.hlo.txt.gz"), "wt") as f:
      f.write(hlo)
  with jax.profiler.trace(args.profile, create_perfetto_trace=True):
    for _ in range(args.profile_steps):
      state, out = step(state)
      jax.block_until_ready(out)
  summary = summarize(args.profile, args.profile_steps, hlo)
  with open(os.path.join(args.profile, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def run_nasjax(mode: str, args) -> dict:
  common = {"impl": "nasjax", "mode": mode, "batch": args.batch, "C": args.C, "layers": args.layers,
            "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
            "dw_impl": args.dw_impl, "pool_impl": args.pool_impl, "edge_loop": args.edge_loop, "remat_edges": args.remat_edges,
            "jax_version": jax.__version__, "compiler_options": compiler_options(),
            "compilation_cache": args.compilation_cache}
  if mode in ("first", "second"):
    out = run_nasjax_search_step(mode, args)
  else:
    out = run_nasjax_plain(mode, args)
  out = common | out
  out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
  stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    out["peak_device_mib"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
  return out


def run_nasjax_plain(mode: str, args) -> dict:
  from nasjax.nn.init import init_variables
  net = Supernet(channels=args.C, layers=args.layers, num_classes=10,
                 impl=Impl(depthwise=args.dw_impl, pool=args.pool_impl),
                 edge_loop=args.edge_loop, remat_edges=args.remat_edges)
  key_alpha, key_x = jax.random.split(jax.random.key(0))
  x = jax.random.normal(key_x, (args.batch, 32, 32, 3))
  y = jnp.arange(args.batch) % 10
  e, o = num_edges(4), len(DARTS_SUPERNET_OPS)
  alphas = {k: 1e-3 * jax.random.normal(kk, (e, o)) for k, kk in
            zip(("normal", "reduce"), jax.random.split(key_alpha))}
  t0 = time.perf_counter()
  variables = init_variables(net, init_key(0), x[:2], alphas, train=True)
  init_s = time.perf_counter() - t0
  step, weight_opt = make_step(net, mode)
  state = {"params": variables["params"], "batch_stats": variables["batch_stats"], "alphas": alphas,
           "opt": weight_opt.init(variables["params"])}
  compiled, compile_times = _compile(step, state, x, y)
  params = sum(p.size for p in jax.tree.leaves(variables["params"]))
  return _time(lambda st: compiled(st, x, y), state, args, compiled) | _hlo_stats(compiled, args) | (
      compile_times | {"init_s": round(init_s, 2), "params": params})


def run_reference(mode: str, args) -> dict:
  script = [args.reference]
  if args.reference_device != "cpu":
    script = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_reference_device.py"),
              args.reference_device, args.reference]
  cmd = [args.torch_python, *script, "--mode", mode, "--batch", str(args.batch), "--C", str(args.C),
         "--layers", str(args.layers), "--steps", str(args.steps), "--warmup", str(args.warmup)]
  if args.threads:
    cmd += ["--threads", str(args.threads)]
  return _run_json(cmd, {"impl": "pytorch-reference", "mode": mode})


def _run_json(cmd: list[str], what: dict) -> dict:
  """Last JSON line of a measuring process, or a record of its failure (the other modes still run)."""
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    return what | {"error": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--modes", default="eval,weights,first,second")
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--C", type=int, default=16)
  ap.add_argument("--layers", type=int, default=8)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--dw-impl", default="auto")
  ap.add_argument("--pool-impl", default="auto", choices=("auto", "shift", "window"),
                  help="pooling form of modes eval and weights (nasjax.nn.ops.resolve_pool_impl)")
  ap.add_argument("--edge-loop", default="auto", help="scan (auto) or unroll: how a cell's edges run")
  ap.add_argument("--remat-edges", type=int, default=None, choices=(0, 1),
                  help="recompute each edge's forward in the backward pass (default: the search config's)")
  ap.add_argument("--torch-python", default=None, help="python with torch, to run the reference too")
  ap.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                      "reference", "torch_darts_step.py"))
  ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
  ap.add_argument("--reference-device", default="cpu",
                  help="device of the reference (cuda: through benchmarks/torch_reference_device.py)")
  ap.add_argument("--method", default="darts", help="one-shot method of modes first/second (darts, pcdarts, ...)")
  ap.add_argument("--hessian", default=None,
                  help="second-order product: jvp, jvp_recompute, unroll or finite_difference (default: the "
                       "search config's)")
  ap.add_argument("--partial-channels", type=int, default=0, help="PC-DARTS K (0: the method's default)")
  ap.add_argument("--profile", default=None,
                  help="folder: after timing, trace --profile-steps more steps of nasjax there and add the "
                       "device time per XLA op (benchmarks/trace_summary.py) to the JSON")
  ap.add_argument("--profile-steps", type=int, default=3)
  ap.add_argument("--hlo-stats", action="store_true",
                  help="add the compiled program's fused kernels, total and distinct (hlo_stats.py)")
  ap.add_argument("--compilation-cache", default=None,
                  help="folder of JAX's persistent compilation cache, as the `nasjax` command keeps one, but "
                       "for every program however short its compile: a second run with the same settings then "
                       "reports the compile of a rerun; default: none, a cold compile")
  ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.pool_impl != "auto" and set(args.modes.split(",")) & {"first", "second"}:
    ap.error("--pool-impl applies to modes eval and weights only (the search config has no pooling choice)")
  xla_workarounds.apply()  # before the first JAX computation (XLA:GPU aborts on these programs without it)
  from nasjax.oneshot.search import search_config
  defaults = search_config(args.method)
  args.remat_edges = bool(defaults.remat_edges if args.remat_edges is None else args.remat_edges)
  args.hessian = args.hessian or defaults.hessian
  if args.worker:
    counts = {}
    if args.compilation_cache:
      jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
      field = {"/jax/compilation_cache/cache_hits": "compilation_cache_hits",
               "/jax/compilation_cache/cache_misses": "compilation_cache_misses"}
      counts = dict.fromkeys(field.values(), 0)
      def count(event, **_):
        if event in field:
          counts[field[event]] += 1
      jax.monitoring.register_event_listener(count)
    print(json.dumps(run_nasjax(args.worker, args) | counts), flush=True)
    return
  for mode in args.modes.split(","):
    if args.torch_python:
      # The reference runs first and in its own process, so neither peak RSS includes the other.
      ref = run_reference(mode, args)
    # Each nasjax mode runs in a fresh process too: its peak RSS is then its own.
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode] + [
        a for a in (argv if argv is not None else sys.argv[1:])]
    ours = _run_json(cmd, {"impl": "nasjax", "mode": mode})
    print(json.dumps(ours), flush=True)
    if args.torch_python:
      print(json.dumps(ref), flush=True)
      if "error" not in ours and "error" not in ref:
        print(json.dumps({"mode": mode, "speedup_vs_reference":
                          round(ref["median_s_per_step"] / ours["median_s_per_step"], 3)}), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
