"""benchmarks/hlo_stats.py: fused kernels counted in total and as distinct computations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from benchmark_scripts import load_benchmark


# Two fused computations that differ only in their names and metadata (one kernel for XLA), a third with
# another constant, called from the entry and from a while body.
MODULE = """HloModule jit_f

%fused_a (param_0: f32[4]) -> f32[4] {
  %param_0 = f32[4]{0} parameter(0)
  %constant.1 = f32[] constant(2)
  %broadcast.1 = f32[4]{0} broadcast(%constant.1), dimensions={}
  ROOT %multiply.1 = f32[4]{0} multiply(%param_0, %broadcast.1), metadata={op_name="a"}
}

%fused_b (param_0.1: f32[4]) -> f32[4] {
  %param_0.1 = f32[4]{0} parameter(0)
  %constant.2 = f32[] constant(2)
  %broadcast.2 = f32[4]{0} broadcast(%constant.2), dimensions={}
  ROOT %multiply.2 = f32[4]{0} multiply(%param_0.1, %broadcast.2), metadata={op_name="b"}
}

%fused_c (param_0.2: f32[4]) -> f32[4] {
  %param_0.2 = f32[4]{0} parameter(0)
  %constant.3 = f32[] constant(3)
  %broadcast.3 = f32[4]{0} broadcast(%constant.3), dimensions={}
  ROOT %multiply.3 = f32[4]{0} multiply(%param_0.2, %broadcast.3)
}

%body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[4]{0} get-tuple-element(%p), index=1
  %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused_b
  %g = f32[4]{0} fusion(%f), kind=kLoop, calls=%fused_c
  ROOT %t = (s32[], f32[4]{0}) tuple(%i, %g)
}

%cond (q: (s32[], f32[4])) -> pred[] {
  %q = (s32[], f32[4]{0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (arg: f32[4]) -> (s32[], f32[4]) {
  %arg = f32[4]{0} parameter(0)
  %e = f32[4]{0} fusion(%arg), kind=kLoop, calls=%fused_a
  %zero = s32[] constant(0)
  %init = (s32[], f32[4]{0}) tuple(%zero, %e)
  ROOT %w = (s32[], f32[4]{0}) while(%init), condition=%cond, body=%body
}
"""


def test_identical_fused_computations_count_once():
  stats = load_benchmark("hlo_stats").kernel_stats(MODULE)
  assert stats["fusions"] == {"kLoop": 3}
  assert stats["distinct_fusions"] == {"kLoop": 2}
  assert stats["while_loops"] == 1
  # Both distinct kernels are needed by the loop body; the entry's is the body's twin, so none is the
  # entry's alone.
  assert stats["distinct_by_place"] == {"loop_body": 2}


def test_counts_a_compiled_program():
  def f(x):
    return lax.fori_loop(0, x.shape[0], lambda i, acc: acc + jnp.sin(x[i]) * i, jnp.zeros(x.shape[1:]))

  x = jnp.ones((5, 7))
  stats = load_benchmark("hlo_stats").kernel_stats(jax.jit(f).lower(x).compile().as_text())
  assert stats["while_loops"] >= 1
  for kind, count in stats["distinct_fusions"].items():
    assert 1 <= count <= stats["fusions"][kind]
