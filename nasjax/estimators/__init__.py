"""Pure ``(arch, key) -> metrics`` estimators that every search strategy can call.

Training (full and low fidelity), learning-curve early termination, network-morphism warm starts, weight
sharing through a trained supernet, zero-cost proxies, the NB201 table, and cost (params, FLOPs, latency).
Modules are imported on first use of a name, so ``import nasjax.estimators`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ShortTrainingEstimator": "train", "short_training_config": "train",
    "EarlyStoppingEstimator": "curves", "CurveModel": "curves", "early_stopping_trainer": "curves",
    "probability_to_beat": "curves",
    "MorphismEstimator": "morphism", "morphism_mutation": "morphism",
    "weight_sharing_estimator": "weight_sharing",
    "proxy_estimator": "proxies", "PROXIES": "proxies",
    "cost_estimator": "cost", "constrained": "cost",
    "NB201TabularEstimator": "tabular", "load_nb201_table": "tabular", "nb201_estimator": "tabular",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'nasjax.estimators' has no attribute {name!r}")
  return getattr(importlib.import_module(f"nasjax.estimators.{_EXPORTS[name]}"), name)
