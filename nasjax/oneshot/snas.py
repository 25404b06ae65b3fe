"""SNAS: stochastic NAS with a relaxed (Concrete) sample per edge, trained in one level (Xie, Zheng, Liu
& Lin, "SNAS: Stochastic Neural Architecture Search", ICLR 2019).

Every step mixes each edge's ops with a soft Gumbel-softmax sample ``softmax((log p + g) / tau)`` and
descends the *training* loss in the weights and the architecture logits together: one backward pass gives
both gradients (no validation split in the update, no hypergradient), which is SNAS's answer to DARTS'
bilevel bias. The temperature anneals exponentially from ``tau_max`` (1.0, the paper's initial value) to
``tau_min`` over the search, so the relaxed samples approach one-hot and the supernet's loss approaches
that of the sampled child networks. The paper's resource constraint is the search's ``cost_weight``
(:mod:`nasjax.oneshot.cost`: the exact expected parameter or multiply-add cost, where the paper estimates
its gradient by the score function; memory access cost is not offered). The genotype is derived from the
softmax of the logits as in DARTS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nasjax.oneshot.method import Method, cell_types, init_logits, softmax_probabilities


def temperature(progress, tau_max: float = 1.0, tau_min: float = 0.03):
  """``tau_max * (tau_min / tau_max) ** progress``: exponential annealing over the search."""
  return tau_max * (tau_min / tau_max) ** progress


def gumbel_soft(key, logits, tau):
  """A relaxed one-hot (Concrete) sample of the categorical ``softmax(logits)``, reparameterised."""
  u = jax.random.uniform(key, logits.shape, minval=1e-10, maxval=1.0 - 1e-7)
  return jax.nn.softmax((jax.nn.log_softmax(logits, axis=-1) - jnp.log(-jnp.log(u))) / tau, axis=-1)


def snas(tau_max: float = 1.0, tau_min: float = 0.03) -> Method:
  if not 0 < tau_min <= tau_max:
    raise ValueError(f"SNAS needs 0 < tau_min <= tau_max; got tau_min={tau_min}, tau_max={tau_max}")

  def mix(arch_params, key, progress):
    tau = temperature(progress, tau_max, tau_min)
    cells = cell_types(arch_params)
    keys = jax.random.split(key, len(cells))
    return {c: gumbel_soft(k, arch_params[c], tau) for c, k in zip(cells, keys)}

  return Method("snas", init_logits, mix, softmax_probabilities, single_level=True)
