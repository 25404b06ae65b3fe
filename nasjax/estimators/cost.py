"""Cost of an architecture: parameters, multiply-accumulates and measured latency, and cost constraints.

Hardware-aware NAS optimises accuracy under a budget of size, operations or latency on a target device
(Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile", CVPR 2019; Cai, Zhu & Han,
"ProxylessNAS: Direct Neural Architecture Search on Target Task and Hardware", ICLR 2019). Here:

* ``params``: parameters as the papers count them (the auxiliary head left out; for NAS-Bench-201 the
  chosen ops only, which reproduces the benchmark's table, Dong & Yang, ICLR 2020);
* ``flops``: multiply-accumulates of one example's forward pass (the papers' "FLOPs" / "multi-adds"),
  counted from the traced program by :func:`nasjax.nn.count.count_macs`;
* ``latency_ms``: the median wall time of the jitted forward pass at a given batch size on the current
  default device, after warm-up runs (compilation is never timed), each run ending in
  ``block_until_ready``. Latency depends on values only through denormals, so the network runs on
  zero-filled variables of the right shapes, which spares compiling an initialiser.

:func:`constrained` turns any estimator into a constrained one: a violating architecture either fails
(NaN fitness, which strategies never select) or has its fitness scaled by MnasNet's soft penalty.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.nn.count import count_macs, count_params
from nasjax.nn.nb201_network import NB201Network
from nasjax.nn.network import Network
from nasjax.nn.ops import XLA_IMPL
from nasjax.spaces.nb201 import NB201Space

COST_METRICS = ("params", "flops", "latency_ms")
CONSTRAINT_MODES = ("fail", "penalty")


def measure_latency_ms(fn: Callable, *args, runs: int = 10, warmup: int = 2,
                       clock: Callable[[], float] = time.perf_counter) -> float:
  """Median milliseconds of ``fn(*args)`` over ``runs`` timed calls after ``warmup`` untimed ones.

  ``clock`` is wall time by default (what a user waits); ``time.process_time`` gives this process's CPU
  time instead (all its threads), which other work on a shared machine does not inflate, so two networks
  measured side by side on a busy host still compare.
  """
  if runs < 1 or warmup < 0:
    raise NasjaxError(f"latency needs runs >= 1 and warmup >= 0; got runs={runs}, warmup={warmup}")
  # At least one warm-up call, so compilation never lands in a timed run.
  for _ in range(max(1, warmup)):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    start = clock()
    jax.block_until_ready(fn(*args))
    times.append((clock() - start) * 1e3)
  return statistics.median(times)


def model_cost(model, input_shape: Sequence[int], *, params: int | None = None, batch_size: int = 64,
               runs: int = 10, warmup: int = 2, metrics: Sequence[str] = COST_METRICS,
               count_model=None) -> dict:
  """Cost of a Flax model called as ``model.apply(variables, x, train=False)`` on NHWC ``input_shape``.

  ``params`` overrides the parameter count (e.g. NAS-Bench-201's count of chosen ops). ``count_model``
  (default ``model``) is what parameters and MACs are counted on: the same network with its depthwise
  convolutions written as grouped convolutions, where ``model`` writes them as shifted slices (XLA:CPU's
  fast form), which the MAC counter cannot see.
  """
  metrics = _check_metrics(metrics)
  input_shape = tuple(int(d) for d in input_shape)
  if batch_size < 1:
    raise NasjaxError(f"batch_size must be >= 1; got {batch_size}")
  one = jax.ShapeDtypeStruct((1,) + input_shape, jnp.float32)
  # Shapes only: the network is traced, never initialised, for the counts.
  counted = model if count_model is None else count_model
  shapes = jax.eval_shape(lambda k, x: counted.init({"params": k, "dropout": k}, x, train=False),
                          jax.random.key(0), one)

  def forward(variables, x):
    return model.apply(variables, x, train=False)

  out = {}
  if "params" in metrics:
    out["params"] = int(params) if params is not None else count_params(shapes["params"])
  if "flops" in metrics:
    out["flops"] = int(count_macs(lambda v, x: counted.apply(v, x, train=False), shapes, one))
  if "latency_ms" in metrics:
    if count_model is not None:
      shapes = jax.eval_shape(lambda k, x: model.init({"params": k, "dropout": k}, x, train=False),
                              jax.random.key(0), one)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    x = jnp.zeros((batch_size,) + input_shape, jnp.float32)
    out["latency_ms"] = measure_latency_ms(jax.jit(forward), zeros, x, runs=runs, warmup=warmup)
  return out


def cost_estimator(space, *, input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10,
                   channels: int | None = None, layers: int | None = None, batch_size: int = 64,
                   runs: int = 10, warmup: int = 2, metrics: Sequence[str] = COST_METRICS) -> Callable:
  """``(arch, key) -> {"params", "flops", "latency_ms"}`` (those named in ``metrics``), host side.

  NAS-Bench-201 (``NB201Space``): the benchmark network of the cell (``channels`` default 16, ``layers``
  = cells per stage, default 5). A cell space with ``decode`` (DARTS, NASNet, ENAS micro): the
  ``Network`` of the genotype (``channels`` default 36, ``layers`` default 20, no auxiliary head).
  The architecture fixes the network, so each new one compiles its own forward pass for the latency.
  The key is unused: cost does not depend on the weights' values.
  """
  metrics = _check_metrics(metrics)
  if isinstance(space, NB201Space):
    size = dict(channels=channels or 16, cells_per_stage=5 if layers is None else layers,
                num_classes=num_classes)

    def build(arch):
      genotype = tuple(int(v) for v in space.check(arch))
      params = int(NB201Network(**size).count_params_for(np.asarray(genotype)))
      return NB201Network(**size, genotype=genotype), params, None
  elif hasattr(space, "decode"):
    size = dict(channels=channels or 36, layers=20 if layers is None else layers, num_classes=num_classes)

    def build(arch):
      genotype = space.decode(space.check(arch))
      # Counted with grouped depthwise convolutions: on CPU the timed network writes them as shifted
      # slices, whose multiply-adds the jaxpr counter would miss (DARTS_V2 at 36 channels, 20 cells:
      # 490M instead of 529M MACs).
      counting = Network(genotype, **size, impl=XLA_IMPL, scan_cells=False)
      return Network(genotype, **size), None, counting
  else:
    raise NasjaxError(f"cost_estimator builds networks for the NB201 space and cell spaces with a genotype "
                      f"(darts, nasnet, enas_micro); got {getattr(space, 'name', type(space).__name__)!r}")

  def estimate(arch, key) -> dict:
    del key
    model, params, counting = build(np.asarray(arch))
    return model_cost(model, input_shape, params=params, batch_size=batch_size, runs=runs, warmup=warmup,
                      metrics=metrics, count_model=counting)

  return estimate


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
  metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
  unknown = [m for m in metrics if m not in COST_METRICS]
  if unknown or not metrics:
    raise NasjaxError(f"unknown cost metrics {unknown or metrics}; accepted: {', '.join(COST_METRICS)}")
  return metrics


def constrained(estimator: Callable, *, max_params: float | None = None, max_flops: float | None = None,
                max_latency_ms: float | None = None, cost: Callable | None = None,
                fitness_key: str = "accuracy", mode: str = "fail", alpha: float = -0.07,
                beta: float = -0.07) -> Callable:
  """An estimator that enforces cost limits on ``estimator``'s architectures (host side).

  The limits are checked on the metrics ``params``, ``flops`` and ``latency_ms``, taken from ``cost``
  (a :func:`cost_estimator`, evaluated first) or, without it, from ``estimator``'s own metrics. The
  result carries every metric, ``"feasible"`` and ``"violation"`` (the largest ``value / limit``).

  Modes:
    * ``"fail"``: a violating architecture's ``fitness_key`` becomes NaN, a failed evaluation that
      strategies never select; with ``cost`` given, ``estimator`` is not even run for it.
    * ``"penalty"``: MnasNet's soft constraint (Tan et al. 2019): fitness is multiplied by
      ``prod_k (value_k / limit_k) ** w_k`` with ``w_k = alpha`` within the limit and ``beta`` above
      it. The defaults ``alpha = beta = -0.07`` are MnasNet's soft latency reward; ``alpha = 0, beta =
      -1`` penalises only violations, steeply. Assumes a positive fitness such as an accuracy.
  """
  limits = {k: v for k, v in (("params", max_params), ("flops", max_flops), ("latency_ms", max_latency_ms))
            if v is not None}
  if not limits:
    raise NasjaxError("constrained needs at least one of max_params, max_flops, max_latency_ms")
  for k, v in limits.items():
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
      raise NasjaxError(f"max_{k.replace('_ms', '')} must be a positive number; got {v!r}")
  if mode not in CONSTRAINT_MODES:
    raise NasjaxError(f"unknown constraint mode {mode!r}; accepted: {', '.join(CONSTRAINT_MODES)}")

  def ratios(metrics: dict) -> dict:
    missing = [k for k in limits if k not in metrics]
    if missing:
      raise NasjaxError(f"constrained: the metrics lack {missing} (have {sorted(metrics)}); pass cost="
                        "cost_estimator(...) or an estimator that reports them")
    return {k: float(metrics[k]) / limits[k] for k in limits}

  def estimate(arch, key) -> dict:
    # The wrapped estimator gets the caller's key, so constraining never changes its result.
    out = dict(cost(arch, jax.random.fold_in(key, 1))) if cost is not None else {}
    if cost is not None and mode == "fail" and max(ratios(out).values()) > 1:
      r = ratios(out)
      return {**out, fitness_key: float("nan"), "feasible": False, "violation": max(r.values())}
    out.update({k: v for k, v in estimator(arch, key).items() if k not in out})
    r = ratios(out)
    feasible = max(r.values()) <= 1
    fitness = float(out.get(fitness_key, float("nan")))
    if mode == "fail":
      fitness = fitness if feasible else float("nan")
    else:
      fitness *= math.prod(v ** (alpha if v <= 1 else beta) for v in r.values())
    return {**out, fitness_key: fitness, "feasible": feasible, "violation": max(r.values())}

  return estimate
