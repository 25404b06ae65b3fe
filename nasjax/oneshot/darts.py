"""DARTS: a softmax over each edge's candidate ops (Liu, Simonyan & Yang, "DARTS: Differentiable
Architecture Search", ICLR 2019).

The architecture is learned on the validation split by the bilevel loop of :mod:`nasjax.oneshot.search`;
first order, or second order with the exact hypergradient (:mod:`nasjax.oneshot.hypergradient`).
"""

from __future__ import annotations

from nasjax.oneshot.method import Method, init_logits, softmax_probabilities


def darts() -> Method:
  def mix(arch_params, key, progress):
    del key, progress
    return softmax_probabilities(arch_params)

  return Method("darts", init_logits, mix, softmax_probabilities)
