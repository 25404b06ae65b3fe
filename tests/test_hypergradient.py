"""architecture_gradients (several hypergradient modes in one program) against one call per mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.oneshot.hypergradient import HESSIAN_MODES, architecture_gradient, architecture_gradients


def losses():
  r = np.random.RandomState(0)
  x_t, x_v = r.randn(6, 4).astype(np.float32), r.randn(5, 4).astype(np.float32)

  def model(params, arch, x):  # the architecture mixes two paths; the weights are not linear in it
    mix = jax.nn.softmax(arch["a"])
    h = jnp.tanh(x @ params["w1"])
    return mix[0] * jnp.sum(h ** 2, 1) + mix[1] * jnp.sum(jnp.sin(h @ params["w2"]), 1)

  train = lambda p, a: jnp.mean((model(p, a, x_t) - 1.0) ** 2)  # noqa: E731
  valid = lambda p, a: jnp.mean((model(p, a, x_v) + 0.5) ** 2)  # noqa: E731
  params = {"w1": r.randn(4, 3).astype(np.float32), "w2": r.randn(3, 2).astype(np.float32)}
  return train, valid, params, {"a": jnp.array([0.3, -0.2])}


def test_architecture_gradients_equal_one_call_per_mode():
  train, valid, params, arch = losses()
  step = dict(xi=0.1, momentum_buffer=jax.tree.map(lambda w: 0.5 * w, params), momentum=0.9, weight_decay=0.01)
  got = jax.jit(lambda p, a: architecture_gradients(train, valid, p, a, hessians=HESSIAN_MODES, **step))(
      params, arch)
  assert set(got) == {"first_order", *HESSIAN_MODES}
  want = {"first_order": architecture_gradient(train, valid, params, arch, order=1)}
  for mode in HESSIAN_MODES:
    want[mode] = architecture_gradient(train, valid, params, arch, order=2, hessian=mode, **step)
  for mode, (value, grad) in want.items():
    np.testing.assert_allclose(got[mode][0], value, rtol=1e-6, err_msg=mode)
    np.testing.assert_allclose(got[mode][1]["a"], grad["a"], rtol=1e-5, atol=1e-7, err_msg=mode)
  # The modes differ where they should: the second-order term is there, the finite difference is close.
  assert not np.allclose(got["jvp"][1]["a"], got["first_order"][1]["a"], rtol=1e-3)
  np.testing.assert_allclose(got["finite_difference"][1]["a"], got["jvp"][1]["a"], rtol=1e-2)
  only = architecture_gradients(train, valid, params, arch, hessians=("jvp_recompute",), first_order=False, **step)
  assert set(only) == {"jvp_recompute"}


def test_architecture_gradients_refuse_an_unknown_mode():
  train, valid, params, arch = losses()
  with pytest.raises(NasjaxError, match="unknown hessian mode 'exact'"):
    architecture_gradients(train, valid, params, arch, hessians=("jvp", "exact"))
