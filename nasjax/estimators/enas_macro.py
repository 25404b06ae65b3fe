"""The estimators of the ENAS macro space (:class:`nasjax.spaces.EnasMacroSpace`) on its one network.

Every estimator uses :class:`nasjax.nn.enas_macro_network.EnasMacroNetwork`, which takes the architecture
as data, so each compiles one program for all candidates:

* training (:func:`training_builder`): each candidate trained briefly from scratch, the architecture
  being the train state's ``extra``;
* weight sharing (:func:`weight_sharing`): the network's shared weights are first trained on the training
  engine (:func:`nasjax.training.fit`, with its checkpoints and exact resume), each step on one
  architecture drawn uniformly from the space (the single-path uniform sampling of Guo et al., "Single Path
  One-Shot Neural Architecture Search with Uniform Sampling", ECCV 2020, instead of ENAS' controller, which
  :mod:`nasjax.oneshot.enas` alternates with it); then each candidate is scored under those weights after
  recalibrating BN (:func:`nasjax.estimators.weight_sharing.weight_sharing_estimator`);
* zero-cost proxies: :func:`nasjax.estimators.proxies.proxy_estimator` on a fresh network per candidate.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.estimators.train import Model, estimation_splits
from nasjax.nn.enas_macro_network import EnasMacroNetwork
from nasjax.training.model import plain_model_fn

PRESETS = ("demo", "paper")


def shared_training_config(preset: str = "demo") -> ml_collections.ConfigDict:
  """Settings of the shared weights' training and of the ranking under them.

  ``"paper"``: the macro search of Pham et al. as the authors' macro search script sets the shared
  network: 36 channels, batch 128, 310 epochs, SGD with momentum 0.9, cosine learning rate from 0.05 to
  0.0005, weight decay 2.5e-4, dropout 0.1 before the classifier (their schedule restarts the cosine, here
  it runs once over the epochs). ``"demo"``: minutes on a CPU (8 channels, three epochs on 1,600 images).
  ``valid_fraction`` of the training set is held out for ranking; ``rank_batches`` batches of each split
  recalibrate BN and score every candidate.
  """
  if preset not in PRESETS:
    raise NasjaxError(f"unknown preset {preset!r}; accepted: {', '.join(PRESETS)}")
  cfg = ml_collections.ConfigDict(dict(
      epochs=310, batch_size=128, learning_rate=0.05, min_learning_rate=0.0005, momentum=0.9,
      weight_decay=2.5e-4, grad_clip=5.0, channels=36, dropout_rate=0.1, crop_padding=4, flip=True, cutout=0,
      valid_fraction=0.1, train_subset=0, rank_batches=10, seed=0, checkpoint_every=1, keep_checkpoints=2))
  if preset == "demo":
    # One epoch leaves the 12-layer shared weights near chance on the embedded subset; compiling, not
    # training, dominates the demo's time, so two more epochs cost little.
    cfg.update(epochs=3, batch_size=32, channels=8, flip=False, train_subset=1600, valid_fraction=0.2,
               rank_batches=4)
  return cfg


def sampled_path_model_fn(net: EnasMacroNetwork) -> Callable:
  """A ``model_fn`` (:mod:`nasjax.training.model`) that trains one uniformly drawn architecture per step.

  In training the step's key (distinct per step) draws the architecture and the dropout mask; in
  evaluation the state's ``extra`` is the architecture.
  """
  space = net.space()

  def model_fn(variables, x, *, train, rng, drop_path_prob, extra):
    del drop_path_prob
    if not train:
      return net.apply(variables, x, extra, train=False), None, variables["batch_stats"]
    path_key, dropout_key = jax.random.split(rng)
    logits, updates = net.apply(variables, x, space.sample(path_key), train=True, rngs={"dropout": dropout_key},
                                mutable=["batch_stats"])
    return logits, None, updates["batch_stats"]

  return model_fn


def _network(space, channels: int, num_classes: int, dropout_rate: float = 0.0) -> EnasMacroNetwork:
  return EnasMacroNetwork.for_space(space, channels=int(channels), num_classes=int(num_classes),
                                    dropout_rate=float(dropout_rate))


def training_builder(space, dataset: nasdata.Dataset, cfg) -> Callable[[np.ndarray], Model]:
  """``arch -> Model`` for the training estimator: one switch network at ``cfg.channels`` channels whose
  architecture is the state's ``extra`` (one program for every candidate)."""
  net = _network(space, cfg.channels, dataset.num_classes)
  sample = jnp.zeros((2,) + tuple(dataset.input_shape), jnp.float32)
  zero_arch = jnp.zeros(space.num_decisions, jnp.int32)
  model_fn = plain_model_fn(net, takes_arch=True)

  def init(key):
    return net.init(key, sample, zero_arch, train=False)

  def build(arch) -> Model:
    arch = space.check(arch)
    params = int(net.count_params_for(arch, in_channels=dataset.input_shape[-1]))
    return Model(init, model_fn, jnp.asarray(arch, jnp.int32), params, shared=True)

  return build


def _stacked_batches(x, y, batch_size: int, num_batches: int, dataset: nasdata.Dataset):
  n = min(len(x), num_batches * batch_size) // batch_size * batch_size
  if n == 0:
    raise NasjaxError(f"weight sharing needs at least one batch of {batch_size} images per split; got {len(x)}")
  images = nasdata.normalize(jnp.asarray(x[:n], jnp.float32), dataset.mean, dataset.std)
  return (images.reshape(n // batch_size, batch_size, *images.shape[1:]),
          jnp.asarray(y[:n], jnp.int32).reshape(n // batch_size, batch_size))


def train_shared_weights(space, dataset: nasdata.Dataset, cfg, *, workdir: str | None = None, mesh=None,
                         show_progress: bool = False) -> tuple[EnasMacroNetwork, dict]:
  """Trains the shared network on uniformly sampled architectures; returns ``(network, variables)``.

  With ``workdir`` every epoch is checkpointed there and a rerun resumes (or, finished, restores) it; a
  checkpoint of other settings or data is refused.
  """
  from nasjax.parallel.distributed import to_host
  from nasjax.training import config_to_dict, fit
  net = _network(space, cfg.channels, dataset.num_classes, cfg.dropout_rate)
  x_tr, y_tr, _, _ = estimation_splits(dataset, cfg)
  sample = jnp.zeros((2,) + tuple(dataset.input_shape), jnp.float32)
  zero_arch = jnp.zeros(space.num_decisions, jnp.int32)
  # The engine's loop reads these; the shared network has neither drop-path nor an auxiliary head.
  run_cfg = cfg.copy_and_resolve_references()
  run_cfg.update(drop_path=0.0, auxiliary=False)
  # The ranking's settings do not change the weights: a rerun with other ones reuses them.
  training_settings = {k: v for k, v in config_to_dict(cfg).items() if k != "rank_batches"}
  identity = {"what": "enas_macro shared weights", "num_layers": space.num_layers, "config": training_settings,
              "dataset": dataset.fingerprint}
  result = fit(sampled_path_model_fn(net), lambda key: net.init(key, sample, zero_arch, train=False), run_cfg,
               x_tr, y_tr, mean=dataset.mean, std=dataset.std, extra=zero_arch, workdir=workdir,
               identity=identity, show_progress=show_progress, mesh=mesh)
  return net, to_host({"params": result.state["params"], "batch_stats": result.state["batch_stats"]})


def weight_sharing(space, dataset: nasdata.Dataset, cfg, *, workdir: str | None = None, mesh=None,
                   show_progress: bool = False):
  """The weight-sharing estimator of ``space``: shared weights trained (or restored from
  ``workdir/supernet``), then each candidate scored under them on the held-out split."""
  from nasjax.estimators.weight_sharing import weight_sharing_estimator
  net, variables = train_shared_weights(space, dataset, cfg, mesh=mesh, show_progress=show_progress,
                                        workdir=os.path.join(workdir, "supernet") if workdir else None)
  x_tr, y_tr, x_va, y_va = estimation_splits(dataset, cfg)
  train = _stacked_batches(x_tr, y_tr, cfg.batch_size, cfg.rank_batches, dataset)
  valid = _stacked_batches(x_va, y_va, cfg.batch_size, cfg.rank_batches, dataset)
  return weight_sharing_estimator(space, net, variables, train, valid)


def proxy_config() -> ml_collections.ConfigDict:
  """The network the zero-cost proxies score (16 channels: they rank initialised networks, which need not
  be the searched width; a population is vmapped, where every op of every layer runs) on one batch of 64."""
  return ml_collections.ConfigDict(dict(batch_size=64, channels=16, seed=0))


def proxy_network(space, cfg, num_classes: int) -> EnasMacroNetwork:
  return _network(space, cfg.channels, num_classes)


__all__ = ["proxy_config", "proxy_network", "sampled_path_model_fn", "shared_training_config",
           "train_shared_weights", "training_builder", "weight_sharing"]
