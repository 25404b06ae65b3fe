"""Per-op latency tables measured on the current device, for hardware-aware one-shot search.

FBNet (Wu et al., CVPR 2019) and ProxylessNAS (Cai, Zhu & Han, ICLR 2019) model a network's latency as the
sum of its ops' latencies, each measured once on the target device at the shape where the op runs; the
expected latency of a distribution over cells is then linear in the op probabilities and differentiable
(:func:`nasjax.oneshot.cost.expected_cost`). Here every candidate op is measured at each cell position's
shape (channels, stride, input height and width, a batch size): the op alone, jitted, in inference mode,
written as the retrained :class:`~nasjax.nn.network.Network` writes it on this backend, on zero-filled
variables, ``warmup`` untimed calls then the median of ``runs`` timed ones
(:func:`nasjax.estimators.cost.measure_latency_ms`). The zero op is never computed by a derived network and
costs 0.

Measurements are kept in a JSON file (default ``$XDG_CACHE_HOME/nasjax/latency_table.json``), one table per
device kind, backend, JAX and jaxlib version, batch size, implementation and timing protocol, each entry
keyed by the op and its shape; a later search on the same device reloads them instead of measuring again,
which also makes a rerun of a search see the same table (latencies measured anew would differ by noise).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import jaxlib

from nasjax.errors import NasjaxError
from nasjax.nn.conv import resolve_conv_impl
from nasjax.nn.ops import Impl, OpConfig, make_op, op_spec

TABLE_FORMAT = "nasjax-latency-table"


def default_table_path() -> str:
  return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nasjax",
                      "latency_table.json")


def network_impl() -> Impl:
  """The implementation :class:`~nasjax.nn.network.Network` runs by default on this backend."""
  impl = Impl()
  return dataclasses.replace(impl, conv=resolve_conv_impl(impl.conv))


def measure_op_ms(op: str, channels: int, stride: int, height: int, width: int, *, batch: int = 1,
                  runs: int = 20, warmup: int = 3, impl: Impl | None = None) -> float:
  """Median milliseconds of ``op``'s jitted inference forward pass on ``[batch, height, width, channels]``."""
  from nasjax.estimators.cost import measure_latency_ms
  if op_spec(op).is_zero:
    return 0.0
  module = make_op(op, OpConfig(channels, stride, affine=True, impl=impl or network_impl()))
  x = jnp.zeros((batch, height, width, channels), jnp.float32)
  shapes = jax.eval_shape(lambda k: module.init(k, x, False), jax.random.key(0))
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return measure_latency_ms(jax.jit(lambda v, x: module.apply(v, x, False)), zeros, x, runs=runs, warmup=warmup)


class LatencyTable:
  """Op latencies of the current device, measured on first use and kept in a JSON file.

  ``table.op_ms(op, channels, stride, height, width)`` is the cost function
  :func:`nasjax.oneshot.cost.edge_cost_tables` takes; :meth:`save` writes new measurements back.
  """

  def __init__(self, path: str | None = None, *, batch: int = 1, runs: int = 20, warmup: int = 3):
    for name, value, low in (("latency_batch", batch, 1), ("latency_runs", runs, 1), ("latency_warmup", warmup, 0)):
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise NasjaxError(f"{name} must be an integer >= {low}, got {value!r}")
    self.path = path or default_table_path()
    self.batch, self.runs, self.warmup = batch, runs, warmup
    self.impl = network_impl()
    device = jax.devices()[0]
    self.key = json.dumps({"platform": device.platform, "device_kind": device.device_kind,
                           "jax": jax.__version__, "jaxlib": jaxlib.__version__, "batch": batch,
                           "impl": dataclasses.asdict(self.impl), "runs": runs, "warmup": warmup}, sort_keys=True)
    self.tables = self._load()
    self.entries = self.tables.setdefault(self.key, {})
    self.measured = 0

  def _load(self) -> dict:
    if not os.path.exists(self.path):
      return {}
    try:
      with open(self.path) as f:
        data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise NasjaxError(f"latency table {self.path} is not readable JSON ({e}); delete it or set "
                        "latency_table to another file") from None
    tables = data.get("tables") if isinstance(data, dict) and data.get("format") == TABLE_FORMAT else None
    valid = isinstance(tables, dict) and all(
        isinstance(t, dict) and all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in t.values())
        for t in tables.values())
    if not valid:
      raise NasjaxError(f"{self.path} is not a nasjax latency table (format {TABLE_FORMAT!r}, tables of "
                        "non-negative milliseconds); delete it or set latency_table to another file")
    return tables

  def op_ms(self, op: str, channels: int, stride: int, height: int, width: int) -> float:
    """Milliseconds of ``op`` at this shape: the table's entry, measured now if the table has none."""
    entry = f"{op} c={channels} stride={stride} {height}x{width}"
    if entry not in self.entries:
      self.entries[entry] = measure_op_ms(op, channels, stride, height, width, batch=self.batch, runs=self.runs,
                                          warmup=self.warmup, impl=self.impl)
      self.measured += 1
    return self.entries[entry]

  def save(self) -> None:
    """Writes the tables back (merged with what another process wrote meanwhile), from process 0 only."""
    from nasjax.parallel.distributed import is_main_process
    from nasjax.utils.stages import write_json_atomic
    if not self.measured or not is_main_process():
      return
    tables = self._load()
    tables.setdefault(self.key, {}).update(self.entries)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    write_json_atomic(self.path, {"format": TABLE_FORMAT, "tables": tables}, indent=1)
    self.measured = 0
