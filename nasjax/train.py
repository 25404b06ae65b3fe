"""Retraining a genotype under a paper's protocol: data-parallel, checkpointed every epoch, exactly resumable.

The default is the DARTS evaluation protocol (Liu et al. 2019, section 3.3 and appendix A.2): SGD with
momentum 0.9, learning rate 0.025 annealed to 0 by a cosine schedule, weight decay 3e-4, batch 96, 600
epochs, cutout 16 (DeVries & Taylor 2017), drop-path 0.2 growing linearly over training, auxiliary loss
weight 0.4, gradient-norm clipping at 5, 36 initial channels and 20 cells.

The training itself is the engine of :mod:`nasjax.training` (model-function contract, steps, epoch loop,
checkpoints); its names are re-exported here for code written against this module.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from nasjax import data as nasdata
from nasjax.nn.network import Network
from nasjax.training import (FitResult, ModelFn, config_to_dict, evaluate, fit, init_key, init_state,  # noqa: F401
                             make_eval_step, make_optimizer, make_train_step, network_model_fn, run_epochs)


def darts_eval_config() -> ml_collections.ConfigDict:
  """The DARTS CIFAR-10 evaluation protocol.

  ``stem="imagenet"`` builds DARTS' ImageNet stem (three stride-2 3x3 convolutions) instead of the CIFAR
  one: with more cells and channels (DARTS: 14 cells, 48 channels) that transfers a cell searched on a
  small data set to a large one, as NASNet (Zoph et al., CVPR 2018) and DARTS (section 3.3) do.
  """
  return ml_collections.ConfigDict(dict(
      epochs=600, batch_size=96, learning_rate=0.025, min_learning_rate=0.0, momentum=0.9,
      weight_decay=3e-4, grad_clip=5.0, cutout=16, crop_padding=4, flip=True, drop_path=0.2,
      auxiliary=True, auxiliary_weight=0.4, channels=36, layers=20, seed=0, eval_batch_size=500,
      checkpoint_every=1, checkpoint_every_steps=0, keep_checkpoints=2, train_subset=0, stem="cifar"))


def demo_config() -> ml_collections.ConfigDict:
  """A few-minute CPU run of the same protocol on a small network (28x28 grey images: no flip)."""
  cfg = darts_eval_config()
  cfg.update(epochs=2, batch_size=64, channels=8, layers=3, cutout=8, flip=False, drop_path=0.1,
             auxiliary=False, eval_batch_size=250)
  return cfg


def train_genotype(genotype, dataset: nasdata.Dataset, cfg, workdir: str | None = None,
                   show_progress: bool = True, identity: dict | None = None,
                   stop_after_epochs: int | None = None, stop_after_steps: int | None = None) -> FitResult:
  """Retrains ``genotype`` on ``dataset`` (test split as the evaluation set) under ``cfg``.

  Checkpoints record ``identity`` and the data's content fingerprint; a resume must match both.
  ``checkpoint_every_steps`` (0: only at epoch ends) also checkpoints inside an epoch, and a rerun resumes
  from there exactly. ``stop_after_epochs`` / ``stop_after_steps`` end this call early, as a killed process
  would.
  """
  network = Network(genotype, cfg.channels, cfg.layers, dataset.num_classes, auxiliary=cfg.auxiliary,
                    stem=cfg.get("stem", "cifar"))
  sample = jnp.zeros((2,) + dataset.input_shape, jnp.float32)

  def model_init(key):
    return network.init({"params": key, "dropout": key}, sample, train=False)

  x_train, y_train = dataset.x_train, dataset.y_train
  if cfg.train_subset:
    x_train, y_train = nasdata.subset(x_train, y_train, cfg.train_subset, cfg.seed)
  return fit(network_model_fn(network), model_init, cfg, x_train, y_train,
             dataset.x_test, dataset.y_test, mean=dataset.mean, std=dataset.std, workdir=workdir,
             identity=dict(identity or {}, dataset=dataset.fingerprint), show_progress=show_progress,
             stop_after_epochs=stop_after_epochs, stop_after_steps=stop_after_steps)
