"""Canonical convolutions (nasjax.nn.conv) and the custom-gradient pieces of the scanned supernet edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.nn import ops
from nasjax.nn.conv import conv2d

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")

# (input shape, kernel shape, stride, padding, dilation): strides, dilations, non-square kernels and
# the asymmetric strides of NASNet's factorised convolutions.
CASES = [
    ((2, 9, 9, 3), (3, 3, 3, 4), 1, ((1, 1), (1, 1)), 1),
    ((2, 9, 9, 3), (3, 3, 3, 4), 2, ((1, 1), (1, 1)), 1),
    ((2, 10, 10, 3), (5, 5, 3, 2), 2, ((4, 4), (4, 4)), 2),
    ((2, 8, 8, 3), (1, 1, 3, 5), 2, ((0, 0), (0, 0)), 1),
    ((2, 11, 7, 3), (1, 7, 3, 2), (1, 2), ((0, 0), (3, 3)), 1),
    ((2, 11, 7, 3), (7, 1, 3, 2), (2, 1), ((3, 3), (0, 0)), 1),
    ((1, 8, 8, 2), (3, 3, 2, 2), 1, ((2, 2), (2, 2)), 2),
    ((2, 7, 7, 2), (3, 3, 2, 2), 2, ((0, 2), (1, 0)), 1),
]


@pytest.mark.parametrize("x_shape,k_shape,stride,padding,dilation", CASES)
def test_canonical_gradients_equal_autodiff(x_shape, k_shape, stride, padding, dilation):
  rng = np.random.default_rng(0)
  x, k = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in (x_shape, k_shape))
  tangents = tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in (x_shape, k_shape))

  def loss(impl):
    return lambda x, k: jnp.sum(jnp.sin(conv2d(x, k, stride, padding, dilation, impl)))

  np.testing.assert_allclose(conv2d(x, k, stride, padding, dilation, "canonical"),
                             conv2d(x, k, stride, padding, dilation, "xla"), rtol=1e-5, atol=1e-5)
  want = jax.grad(loss("xla"), (0, 1))(x, k)
  got = jax.jit(jax.grad(loss("canonical"), (0, 1)))(x, k)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
  # Forward-over-reverse (second-order DARTS differentiates the backward pass).
  want = jax.jvp(jax.grad(loss("xla"), (0, 1)), (x, k), tangents)[1]
  got = jax.jit(lambda x, k: jax.linearize(jax.grad(loss("canonical"), (0, 1)), x, k)[1](*tangents))(x, k)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_unknown_conv_impl_is_refused():
  with pytest.raises(ValueError, match="accepted: auto, xla, canonical"):
    conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), impl="winograd")


@pytest.mark.parametrize("stride,size", [(1, 9), (2, 9), (2, 8)])
@pytest.mark.parametrize("window", [3, 5])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_separable_pool_gradient_equals_reduce_window(kind, window, stride, size):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  def loss(impl):
    return lambda x: jnp.sum(jnp.sin(ops.pool(x, kind, window, stride, impl)))
  np.testing.assert_allclose(jax.jit(jax.grad(loss("shift")))(x), jax.grad(loss("window"))(x), atol=1e-5)
  np.testing.assert_allclose(ops.pool(x, kind, window, stride, "shift"), ops.pool(x, kind, window, stride, "window"),
                             atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_separable_max_pool_gradient_with_ties_is_a_subgradient(stride):
  # Ties (common after rounding or ReLU) may split the gradient differently from PyTorch's first-maximum
  # rule, but each window's gradient must still sum to its output's gradient and land on maxima only.
  x = jnp.round(jax.random.normal(jax.random.key(0), (2, 9, 9, 3)))
  upstream = jax.random.uniform(jax.random.key(1), ops.pool(x, "max", 3, stride, "shift").shape)
  grad = jax.grad(lambda x: jnp.sum(ops.pool(x, "max", 3, stride, "shift") * upstream))(x)
  np.testing.assert_allclose(jnp.sum(grad), jnp.sum(upstream), rtol=1e-5)
  out, x, grad = (np.asarray(a) for a in (ops.pool(x, "max", 3, stride, "shift"), x, grad))
  for n, r, c, ch in zip(*np.nonzero(grad)):
    windows = [(i, j) for i in range(out.shape[1]) for j in range(out.shape[2])
               if abs(i * stride - r) <= 1 and abs(j * stride - c) <= 1]
    assert any(out[n, i, j, ch] == x[n, r, c, ch] for i, j in windows), (n, r, c, ch)


# The kernel gradient's tap loop at strides 1 and 2, an odd input size and dilation, with the
# forward-over-reverse product DARTS' exact second order takes through it.
@pytest.mark.parametrize("channels", [6, 20])
@pytest.mark.parametrize("k,dilation", [(3, 1), (5, 2)])
@pytest.mark.parametrize("stride,size", [(1, 8), (2, 8), (2, 9)])
def test_shift_depthwise_custom_gradient_equals_autodiff(channels, k, dilation, stride, size):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, size, size, channels)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 1, channels)), jnp.float32)
  tangents = (jnp.asarray(rng.normal(size=x.shape), jnp.float32), jnp.asarray(rng.normal(size=w.shape), jnp.float32))

  def loss(impl, conv_impl):
    return lambda x, w: jnp.sum(jnp.sin(ops.depthwise_conv(x, w, stride, dilation, impl, conv_impl)))

  want = jax.grad(loss("grouped", "xla"), (0, 1))(x, w)
  got = jax.jit(jax.grad(loss("shift", "canonical"), (0, 1)))(x, w)
  want_hvp = jax.jvp(jax.grad(loss("grouped", "xla"), (0, 1)), (x, w), tangents)[1]
  got_hvp = jax.jvp(jax.grad(loss("shift", "canonical"), (0, 1)), (x, w), tangents)[1]
  for g, ref in zip(got + got_hvp, want + want_hvp):
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4)


def test_pool_impl_is_an_explicit_choice(monkeypatch):
  monkeypatch.setenv("NASJAX_POOL_IMPL", "window")  # the knob of earlier versions is not read
  assert ops.resolve_pool_impl("auto", "cpu") == "shift" and ops.resolve_pool_impl("auto", "gpu") == "window"
  assert ops.resolve_pool_impl("window", "cpu") == "window" and ops.resolve_pool_impl("shift", "gpu") == "shift"
  with pytest.raises(NasjaxError, match="unknown pool implementation 'fast'; accepted: auto, shift, window"):
    ops.resolve_pool_impl("fast")
  with pytest.raises(NasjaxError, match="unknown pool implementation 'fast'; accepted: auto, shift, window"):
    ops.Impl(pool="fast")
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  for impl in ("auto", "shift", "window"):
    module = ops.make_op("max_pool_3x3", ops.OpConfig(3, impl=ops.Impl(pool=impl)))
    np.testing.assert_allclose(module.apply({}, x, False), ops.pool(x, "max", 3, 1, "window"), rtol=1e-6)
