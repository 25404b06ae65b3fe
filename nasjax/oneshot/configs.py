"""One-shot search settings: each method's paper setting (:func:`search_config`), a minutes-long CPU demo
(:func:`demo_search_config`), their validation (:func:`check_config`) and the method registry
(:data:`METHODS`, :func:`make_method`)."""

from __future__ import annotations

import math
from typing import Callable

import ml_collections

from nasjax.errors import NasjaxError
from nasjax.oneshot import cost as arch_cost
from nasjax.oneshot.anti_collapse import ANTI_COLLAPSE
from nasjax.oneshot.darts import darts
from nasjax.oneshot.drnas import drnas
from nasjax.oneshot.gdas import gdas
from nasjax.oneshot.method import Method
from nasjax.oneshot.pcdarts import pcdarts
from nasjax.oneshot.snas import snas
from nasjax.oneshot.spos import spos

# The method registry: name -> ``factory(cfg, space) -> Method``.
METHOD_FACTORIES: dict[str, Callable[..., Method]] = {
    "darts": lambda cfg, space: darts(),
    "gdas": lambda cfg, space: gdas(cfg.tau_max, cfg.tau_min),
    "pcdarts": lambda cfg, space: pcdarts(cfg.partial_channels),
    "drnas": lambda cfg, space: drnas(cfg.drnas_reg),
    "snas": lambda cfg, space: snas(cfg.tau_max, cfg.tau_min),
    "spos": lambda cfg, space: spos(space),
}
METHODS = tuple(METHOD_FACTORIES)
# Methods per space kind: PC-DARTS' partial channels and edge normalisation are written for the DARTS cell.
NB201_METHODS = ("darts", "gdas", "drnas", "snas", "spos")
# Keys of the DARTS-style supernet that the NB201 network does not have (it has cells_per_stage instead).
_DARTS_SUPERNET_KEYS = ("layers", "stem_multiplier", "dw_impl", "edge_loop", "remat_edges")


def search_config(method: str = "darts", space: str = "darts") -> ml_collections.ConfigDict:
  """The search setting of each method's paper on CIFAR-10 (DARTS: 50 epochs, batch 64, 16 channels,
  8 cells, half of the training set for the architecture).

  ``space="nb201"``: the NAS-Bench-201 paper's supernet for its one-shot rows (16 channels, 5 cells per
  stage: ``cells_per_stage`` replaces ``layers``), with the method's own training setting."""
  if method not in METHODS:
    raise NasjaxError(f"unknown one-shot method {method!r}; accepted: {', '.join(METHODS)}")
  cfg = ml_collections.ConfigDict(dict(
      method=method, space="darts", epochs=50, batch_size=64, channels=16, layers=8, stem_multiplier=3,
      learning_rate=0.025, min_learning_rate=0.001, momentum=0.9, weight_decay=3e-4, grad_clip=5.0,
      arch_learning_rate=3e-4, arch_beta1=0.5, arch_beta2=0.999, arch_weight_decay=1e-3,
      order=1, hessian="jvp_recompute", arch_warmup_epochs=0, partial_channels=1, tau_max=10.0, tau_min=0.1,
      drnas_reg=1e-3, anti_collapse="none", max_skips=2, eigen_every=0, eigen_iters=10,
      eigen_window=5, eigen_ratio=0.75, valid_fraction=0.5, train_subset=0, crop_padding=4, flip=True,
      seed=2, eval_batch_size=500, checkpoint_every_steps=0, keep_checkpoints=2, rank_samples=100,
      rank_batches=4, rank_strategy="regularized_evolution", dw_impl="auto", edge_loop="auto",
      remat_edges=True, cost_weight=0.0, cost_metric="params", cost_target=0.0, latency_table="",
      latency_batch=1, latency_runs=20, latency_warmup=3))
  if method == "pcdarts":
    # Xu et al. 2020: K=4, batch 256, learning rate 0.1, architecture lr 6e-4, 15 warm-up epochs.
    cfg.update(partial_channels=4, batch_size=256, learning_rate=0.1, arch_learning_rate=6e-4,
               arch_warmup_epochs=15)
  elif method == "gdas":
    # Dong & Yang 2019: 240 epochs, tau 10 -> 0.1.
    cfg.update(epochs=240)
  elif method == "drnas":
    cfg.update(arch_learning_rate=6e-4)
  elif method == "snas":
    # Xie et al. 2019: 150 epochs; temperature 1.0 annealed (here exponentially) to tau_min.
    cfg.update(epochs=150, tau_max=1.0, tau_min=0.03)
  if space == "nb201":
    for key in _DARTS_SUPERNET_KEYS:
      del cfg[key]
    cfg.update(space="nb201", cells_per_stage=5)
  return cfg


def demo_search_config(method: str = "darts", space: str = "darts") -> ml_collections.ConfigDict:
  """A minutes-long CPU search on the embedded Fashion-MNIST subset: 4 channels, 5 cells, 2 epochs
  (NB201: 4 channels, 1 cell per stage)."""
  cfg = search_config(method, space)
  cfg.update(epochs=2, batch_size=32, channels=4, train_subset=1600, arch_warmup_epochs=0,
             eval_batch_size=500, rank_samples=8, rank_batches=2)
  if space == "nb201":
    cfg.update(cells_per_stage=1)
  else:
    cfg.update(layers=5)
  return cfg


def check_space(cfg, space) -> None:
  """Refuses a method or setting the space's supernet does not have, in one line naming what it accepts."""
  from nasjax.spaces.nb201 import NB201Space
  if isinstance(space, NB201Space):
    if cfg.method not in NB201_METHODS:
      raise NasjaxError(f"--method {cfg.method} runs on the darts, nasnet and enas_micro spaces; on nb201 the "
                        f"one-shot methods are {', '.join(NB201_METHODS)}")
    if cfg.cost_weight:
      raise NasjaxError("cost_weight is for the darts, nasnet and enas_micro supernets; on nb201 rank cells "
                        "under a budget with nasjax.estimators.cost.constrained instead")
    if int(cfg.get("cells_per_stage", 5)) < 0:
      raise NasjaxError(f"cells_per_stage must be >= 0, got {cfg.cells_per_stage}")
  elif not hasattr(space, "supernet_ops"):
    raise NasjaxError(f"one-shot methods need a cell space with a supernet (darts, nasnet, enas_micro, nb201); "
                      f"got {getattr(space, 'name', type(space).__name__)!r}")


def make_method(cfg, space) -> Method:
  """The :class:`Method` named by ``cfg.method``, with its settings from ``cfg``."""
  if cfg.method not in METHOD_FACTORIES:
    raise NasjaxError(f"unknown one-shot method {cfg.method!r}; accepted: {', '.join(METHODS)}")
  return METHOD_FACTORIES[cfg.method](cfg, space)


def check_config(cfg) -> None:
  """Refuses a setting the search cannot run with one line naming what is accepted (before any work)."""
  if cfg.order not in (1, 2):
    raise NasjaxError(f"order must be 1 or 2, got {cfg.order!r}")
  if cfg.anti_collapse not in ANTI_COLLAPSE:
    raise NasjaxError(f"unknown anti_collapse {cfg.anti_collapse!r}; accepted: {', '.join(ANTI_COLLAPSE)}")
  if cfg.anti_collapse == "eigenvalue" and cfg.eigen_every != 1:
    raise NasjaxError("anti_collapse='eigenvalue' needs the eigenvalue every epoch: set eigen_every=1")
  for name in ("epochs", "batch_size", "channels", "layers"):
    if name in cfg and int(cfg[name]) < 1:
      raise NasjaxError(f"{name} must be positive, got {cfg[name]}")
  if cfg.channels % cfg.partial_channels:
    raise NasjaxError(f"channels {cfg.channels} must be divisible by partial_channels {cfg.partial_channels}")
  if cfg.cost_metric not in arch_cost.SEARCH_COST_METRICS:
    raise NasjaxError(f"unknown cost_metric {cfg.cost_metric!r}; accepted: "
                      f"{', '.join(arch_cost.SEARCH_COST_METRICS)}")
  for name in ("cost_weight", "cost_target"):
    if not (math.isfinite(cfg.get(name, 0.0)) and cfg.get(name, 0.0) >= 0):
      raise NasjaxError(f"{name} must be a finite number >= 0, got {cfg[name]}")
  for name, low in (("latency_batch", 1), ("latency_runs", 1), ("latency_warmup", 0)):
    if name in cfg and (isinstance(cfg[name], bool) or not isinstance(cfg[name], int) or cfg[name] < low):
      raise NasjaxError(f"{name} must be an integer >= {low}, got {cfg[name]!r}")
  if cfg.get("cost_target", 0.0) and not cfg.cost_weight:
    raise NasjaxError("cost_target needs a cost_weight > 0 (the weight of the penalty above the target)")
  if cfg.method == "spos":
    from nasjax import strategies
    name = str(cfg.get("rank_strategy", "random")).strip().lower().replace("-", "_")
    if strategies.STRATEGY_ALIASES.get(name, name) not in strategies.STRATEGY_NAMES:
      raise NasjaxError(f"unknown rank_strategy {cfg.rank_strategy!r}; accepted: "
                        f"{', '.join(strategies.STRATEGY_NAMES)}")
    if int(cfg.rank_samples) < 1:
      raise NasjaxError(f"rank_samples must be positive, got {cfg.rank_samples}")
  if cfg.cost_weight and cfg.method == "spos":
    raise NasjaxError("cost_weight needs architecture parameters to penalise; SPOS has none: rank its cells "
                      "under a budget with nasjax.estimators.cost.constrained instead")
