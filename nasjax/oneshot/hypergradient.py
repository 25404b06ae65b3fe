"""Gradients of the validation loss with respect to the architecture, first and second order.

DARTS (Liu et al., ICLR 2019, eq. 6-8) approximates the best weights ``w*(alpha)`` by one virtual SGD step
``w' = w - xi * (momentum * buffer + grad_w L_train(w, alpha) + weight_decay * w)`` and differentiates
``L_val(w'(alpha), alpha)``:

    dL/dalpha = grad_alpha L_val(w', alpha) - xi * grad2_{alpha, w} L_train(w, alpha) . grad_w' L_val(w', alpha)

The paper approximates the mixed second-derivative product by a central finite difference of
``grad_alpha L_train`` at ``w +- eps * v``. Autodiff gives it exactly:

* ``"jvp"`` (default): forward-over-reverse. ``jax.linearize`` of ``w -> (grad_w, grad_alpha) L_train``
  yields ``grad_w L_train`` (for ``w'``) and a linear map whose ``alpha`` output at tangent ``v`` is the
  exact mixed product, sharing one forward/backward pass;
* ``"jvp_recompute"``: the same exact product with ``jax.jvp`` at ``v`` once ``v`` is known, instead of
  keeping the linearisation alive across the validation gradient: one more forward/backward pass of the
  training loss, far less memory (measured in ``benchmarks/supernet_step.py``; with the supernet's
  ``remat_edges`` it is what fits the paper's second-order setting on a 24 GiB CPU machine);
* ``"unroll"``: reverse-over-reverse through the unrolled step, ``jax.grad`` of ``alpha ->
  L_val(w'(alpha), alpha)`` (also exact; a cross-check);
* ``"finite_difference"``: the paper's approximation with ``eps = 0.01 / ||v||``, kept for comparison.

All take ``train_loss(params, arch) -> scalar`` and ``valid_loss(params, arch) -> scalar`` closures, so
every method (softmax, Gumbel, Dirichlet, ...) gets the same hypergradient. :func:`architecture_gradients`
computes several modes (and the first order) in one program that shares the virtual step and the
validation gradient, to compare them.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from nasjax.errors import NasjaxError

HESSIAN_MODES = ("jvp", "jvp_recompute", "unroll", "finite_difference")


def virtual_step(params, grads, xi, momentum_buffer=None, momentum: float = 0.0, weight_decay: float = 0.0):
  """The one SGD step DARTS unrolls: momentum and weight decay as in the weight optimizer, no clipping."""
  def one(w, g, buf):
    direction = g + weight_decay * w
    if buf is not None:
      direction = direction + momentum * buf
    return w - xi * direction
  if momentum_buffer is None:
    return jax.tree.map(lambda w, g: one(w, g, None), params, grads)
  return jax.tree.map(one, params, grads, momentum_buffer)


def architecture_gradient(train_loss: Callable, valid_loss: Callable, params, arch, *, order: int = 1,
                          hessian: str = "jvp", xi=0.0, momentum_buffer=None, momentum: float = 0.0,
                          weight_decay: float = 0.0, fd_scale: float = 0.01):
  """Returns ``(valid_loss_value, d valid_loss / d arch)`` (first order, or second order via ``hessian``)."""
  if order == 1:
    return jax.value_and_grad(valid_loss, argnums=1)(params, arch)
  if order != 2:
    raise NasjaxError(f"order must be 1 or 2, got {order!r}")
  if hessian not in HESSIAN_MODES:
    raise NasjaxError(f"unknown hessian mode {hessian!r}; accepted: {', '.join(HESSIAN_MODES)}")
  step = lambda w, g: virtual_step(w, g, xi, momentum_buffer, momentum, weight_decay)

  if hessian == "unroll":
    def unrolled(a):
      return valid_loss(step(params, jax.grad(train_loss)(params, a)), a)
    return jax.value_and_grad(unrolled)(arch)
  return architecture_gradients(train_loss, valid_loss, params, arch, hessians=(hessian,), first_order=False,
                                xi=xi, momentum_buffer=momentum_buffer, momentum=momentum,
                                weight_decay=weight_decay, fd_scale=fd_scale)[hessian]


def _mixed_product(hessian: str, train_loss: Callable, params, arch, v, linear, fd_scale: float):
  """``grad2_{alpha, w} L_train(w, alpha) . v`` by ``hessian`` ("jvp" needs ``linear``, the linearisation
  of ``w -> (grad_w, grad_alpha) L_train``)."""
  if hessian == "jvp":
    return linear(v)[1]
  if hessian == "jvp_recompute":
    return jax.jvp(lambda w: jax.grad(train_loss, argnums=(0, 1))(w, arch), (params,), (v,))[1][1]
  eps = fd_scale / (optax.tree.norm(v) + 1e-12)
  plus = jax.tree.map(lambda w, d: w + eps * d, params, v)
  minus = jax.tree.map(lambda w, d: w - eps * d, params, v)
  g_plus = jax.grad(train_loss, argnums=1)(plus, arch)
  g_minus = jax.grad(train_loss, argnums=1)(minus, arch)
  return jax.tree.map(lambda a, b: (a - b) / (2 * eps), g_plus, g_minus)


def architecture_gradients(train_loss: Callable, valid_loss: Callable, params, arch, *,
                           hessians=("jvp", "finite_difference"), first_order: bool = True, xi=0.0,
                           momentum_buffer=None, momentum: float = 0.0, weight_decay: float = 0.0,
                           fd_scale: float = 0.01) -> dict:
  """:func:`architecture_gradient` for several ``hessians`` (and ``"first_order"``), as a dict of
  ``(valid_loss_value, gradient)``, each equal to its own call's.

  Jitted, it is one program in which the modes share the virtual step, the validation gradient at the
  stepped weights and (for ``"jvp"``) the linearisation of the training gradient: less to trace and
  compile than one program per mode.
  """
  unknown = [h for h in hessians if h not in HESSIAN_MODES]
  if unknown:
    raise NasjaxError(f"unknown hessian mode {unknown[0]!r}; accepted: {', '.join(HESSIAN_MODES)}")
  out = {}
  if first_order:
    out["first_order"] = architecture_gradient(train_loss, valid_loss, params, arch, order=1)
  step = lambda w, g: virtual_step(w, g, xi, momentum_buffer, momentum, weight_decay)
  if "unroll" in hessians:
    out["unroll"] = architecture_gradient(train_loss, valid_loss, params, arch, order=2, hessian="unroll",
                                          xi=xi, momentum_buffer=momentum_buffer, momentum=momentum,
                                          weight_decay=weight_decay)
  shared = [h for h in hessians if h != "unroll"]
  if not shared:
    return out
  linear = None
  if "jvp" in shared:
    (grad_w, _), linear = jax.linearize(lambda w: jax.grad(train_loss, argnums=(0, 1))(w, arch), params)
  else:
    grad_w = jax.grad(train_loss)(params, arch)
  value, (v, direct) = jax.value_and_grad(valid_loss, argnums=(0, 1))(step(params, grad_w), arch)
  for hessian in shared:
    mixed = _mixed_product(hessian, train_loss, params, arch, v, linear, fd_scale)
    out[hessian] = (value, jax.tree.map(lambda d, m: d - xi * m, direct, mixed))
  return out


def hessian_vector_product(loss: Callable, arch, vector):
  """Exact ``H v`` of ``loss`` at ``arch`` (forward-over-reverse), ``H`` the Hessian w.r.t. ``arch``."""
  return jax.jvp(jax.grad(loss), (arch,), (vector,))[1]


def dominant_eigenvalue(hvp: Callable, like, key, iterations: int = 20) -> float:
  """Largest-magnitude Hessian eigenvalue by power iteration; RobustDARTS (Zela et al., "Understanding
  and Robustifying Differentiable Architecture Search", ICLR 2020) tracks it for the architecture.

  ``hvp(v)`` is a (jitted) Hessian-vector product on pytrees shaped like ``like``. The loop runs on the
  host: a ``lax.fori_loop`` body runs several times slower on XLA:CPU, and unrolling multiplies compile time.
  """
  flat, unravel = ravel_pytree(like)
  v = jax.random.normal(key, flat.shape, jnp.float32)
  v = v / jnp.linalg.norm(v)
  eigenvalue = jnp.zeros(())
  for _ in range(iterations):
    hv = ravel_pytree(hvp(unravel(v.astype(flat.dtype))))[0]
    eigenvalue = jnp.vdot(v, hv)
    v = hv / (jnp.linalg.norm(hv) + 1e-30)
  return float(eigenvalue)
