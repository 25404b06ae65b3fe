"""DrNAS: a Dirichlet distribution over each edge's op mixture (Chen et al., "DrNAS: Dirichlet Neural
Architecture Search", ICLR 2021).

The architecture parameters are (pre-activation) concentrations ``beta``; the concentration is
``elu(beta) + 1`` (positive), and every step mixes the ops with a reparameterised Dirichlet sample (JAX's
gamma sampler has implicit reparameterisation gradients). The op probabilities are the Dirichlet mean.
The paper regularises the concentration towards an anchor; we use ``scale * KL(Dir(c) || Dir(1))`` (the
anchor-regularised form of the paper's objective; ``scale`` 1e-3 by default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from nasjax.oneshot.method import Method, cell_types, init_logits


def concentration(beta: jax.Array) -> jax.Array:
  return jax.nn.elu(beta) + 1.0


def dirichlet_kl_to_uniform(conc: jax.Array) -> jax.Array:
  """KL(Dir(conc) || Dir(1, ..., 1)) summed over the leading axes; the last axis is the simplex."""
  k = conc.shape[-1]
  total = conc.sum(-1)
  kl = (gammaln(total) - gammaln(conc).sum(-1) - gammaln(jnp.asarray(float(k)))
        + ((conc - 1.0) * (digamma(conc) - digamma(total)[..., None])).sum(-1))
  return kl.sum()


def drnas(reg_scale: float = 1e-3) -> Method:
  def probabilities(arch_params):
    out = {}
    for c in cell_types(arch_params):
      conc = concentration(arch_params[c])
      out[c] = conc / conc.sum(-1, keepdims=True)
    return out

  def mix(arch_params, key, progress):
    del progress
    cells = cell_types(arch_params)
    keys = jax.random.split(key, len(cells))
    return {c: jax.random.dirichlet(k, concentration(arch_params[c])) for c, k in zip(cells, keys)}

  def regularizer(arch_params):
    return reg_scale * sum(dirichlet_kl_to_uniform(concentration(arch_params[c])) for c in cell_types(arch_params))

  return Method("drnas", init_logits, mix, probabilities, regularizer=regularizer)
