"""Low-fidelity training estimator: train a candidate briefly from scratch, report validation accuracy.

Two ways to build the candidate, chosen by ``model``:

* ``"supernet"``: the discrete path of the cell supernet (``Supernet`` in discrete mode, freshly
  initialised for every candidate). The architecture is an array argument of one compiled training step,
  so a search over thousands of cells compiles once; the step holds every candidate op as a switch
  branch, which XLA:CPU takes minutes to compile.
* ``"network"``: the stand-alone ``Network`` of each genotype (only its chosen ops). Each candidate
  compiles on its own, in tens of seconds on CPU for small networks: the better choice for the few
  dozen candidates a CPU search affords. Fidelity knobs (epochs, channels, cells, data subset) are config
fields, the axes that successive halving and Hyperband move along (Li et al. 2018).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.nn.count import count_params
from nasjax.nn.network import Network
from nasjax.nn.supernet import Supernet
from nasjax.train import darts_eval_config, evaluate, init_state, make_eval_step, make_optimizer, \
    make_train_step, network_model_fn, run_epochs


def short_training_config() -> ml_collections.ConfigDict:
  cfg = darts_eval_config()
  cfg.update(epochs=1, batch_size=64, channels=8, layers=3, cutout=0, flip=False, drop_path=0.0,
             auxiliary=False, valid_fraction=0.2, train_subset=0, eval_batch_size=250)
  return cfg


def estimation_splits(dataset: nasdata.Dataset, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(x_train, y_train, x_valid, y_valid) a training-based estimator uses: a stratified validation split of
  the training set (``cfg.valid_fraction``), then an optional class-balanced training subset
  (``cfg.train_subset``); labels int32."""
  x_tr, y_tr, x_va, y_va = nasdata.train_valid_split(dataset.x_train, dataset.y_train, cfg.valid_fraction,
                                                     cfg.seed)
  if cfg.train_subset:
    x_tr, y_tr = nasdata.subset(x_tr, y_tr, cfg.train_subset, cfg.seed)
  return x_tr, y_tr.astype(np.int32), x_va, y_va.astype(np.int32)


class ShortTrainingEstimator:
  """``estimator(arch, key) -> metrics`` for a cell space whose edges can express the architecture."""

  def __init__(self, space, dataset: nasdata.Dataset, cfg=None, mesh=None, show_progress=False,
               model: str = "network", fidelity_epochs: tuple[int, ...] | None = None):
    """``fidelity_epochs`` (e.g. ``(1, 3, 9)``) gives the epochs of each fidelity level, so a
    multi-fidelity strategy (Hyperband) calls ``estimator(arch, key, fidelity=level)``; the learning-rate
    schedule then spans that level's epochs, as a genuinely shorter training would."""
    if model not in ("network", "supernet"):
      raise NasjaxError(f"unknown estimator model {model!r}; accepted: network, supernet")
    if fidelity_epochs is not None and (not fidelity_epochs or any(int(e) < 1 for e in fidelity_epochs)):
      raise NasjaxError(f"fidelity_epochs must be a non-empty tuple of positive epoch counts, got {fidelity_epochs!r}")
    self.fidelity_epochs = tuple(int(e) for e in fidelity_epochs) if fidelity_epochs else None
    self.model = model
    self.space = space
    self.cfg = cfg or short_training_config()
    if not hasattr(space, "edge_ops"):
      raise NasjaxError(f"the short-training estimator needs a cell space (darts, nasnet, enas_micro), "
                        f"got {getattr(space, 'name', space)!r}")
    self.data = estimation_splits(dataset, self.cfg)
    self.dataset = dataset
    self.mesh = mesh or nasdata.data_mesh()
    self.show_progress = show_progress
    steps_per_epoch = nasdata.Batcher(self.data[0], self.data[1], self.cfg.batch_size).steps_per_epoch
    self.tx = make_optimizer(self.cfg, steps_per_epoch)
    if model == "network":
      return
    self.net = Supernet.for_space(space, channels=self.cfg.channels, layers=self.cfg.layers,
                                  num_classes=dataset.num_classes, affine=True)
    sample_x = jnp.zeros((2,) + dataset.input_shape, jnp.float32)
    sample_arch = jnp.zeros((2, space.num_edges), jnp.int32)
    net = self.net

    def model_init(key):
      return net.init(key, sample_x, sample_arch, train=True)

    def model_fn(variables, x, *, train, rng, drop_path_prob, extra):
      del rng, drop_path_prob
      if not train:
        return net.apply(variables, x, extra, train=False), None, variables["batch_stats"]
      logits, updates = net.apply(variables, x, extra, train=True, mutable=["batch_stats"])
      return logits, None, updates["batch_stats"]

    self._model_init = model_init
    self._train_step = make_train_step(model_fn, self.tx, self.cfg, dataset.mean, dataset.std)
    self._eval_step = make_eval_step(model_fn, dataset.mean, dataset.std)

  def genotype_params(self, arch) -> int:
    """Parameters of the stand-alone network of ``arch`` at the estimator's size (paper count)."""
    genotype = self.space.decode(np.asarray(arch))
    network = Network(genotype, self.cfg.channels, self.cfg.layers, self.dataset.num_classes)
    shapes = jax.eval_shape(lambda k: network.init({"params": k, "dropout": k},
                                                   jnp.zeros((1,) + self.dataset.input_shape)),
                            jax.random.key(0))
    return count_params(shapes["params"])

  def __call__(self, arch, key, fidelity=None) -> dict:
    arch = np.asarray(arch)
    self.space.check(arch)
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    cfg = self.cfg.copy_and_resolve_references()
    cfg.seed = seed
    tx = self.tx
    if fidelity is not None:
      if self.fidelity_epochs is None:
        raise NasjaxError("this estimator has no fidelity levels; build it with fidelity_epochs=(...)")
      level = int(fidelity)
      if not 0 <= level < len(self.fidelity_epochs):
        raise NasjaxError(f"fidelity level {level} outside 0..{len(self.fidelity_epochs) - 1}")
      cfg.epochs = self.fidelity_epochs[level]
      if cfg.epochs != self.cfg.epochs:
        tx = make_optimizer(cfg, nasdata.Batcher(self.data[0], self.data[1], cfg.batch_size).steps_per_epoch)
    t0 = time.perf_counter()
    if self.model == "supernet" and tx is not self.tx:
      raise NasjaxError("fidelity levels with other epoch counts need model='network' (the supernet "
                        "estimator compiles one schedule)")
    if self.model == "supernet":
      extra = jnp.asarray(self.space.edge_ops(jnp.asarray(arch)), jnp.int32)
      model_init, train_step, eval_step = self._model_init, self._train_step, self._eval_step
    else:
      extra = None
      network = Network(self.space.decode(arch), cfg.channels, cfg.layers, self.dataset.num_classes)
      sample = jnp.zeros((2,) + self.dataset.input_shape, jnp.float32)
      model_fn = network_model_fn(network)
      model_init = lambda k: network.init({"params": k, "dropout": k}, sample)  # noqa: E731
      train_step = make_train_step(model_fn, tx, cfg, self.dataset.mean, self.dataset.std)
      eval_step = make_eval_step(model_fn, self.dataset.mean, self.dataset.std)
    state = init_state(model_init, tx, seed, extra=extra)
    state = nasdata.replicate(state, self.mesh)
    batcher = nasdata.Batcher(self.data[0], self.data[1], cfg.batch_size, seed=seed)
    state, history = run_epochs(train_step, None, state, batcher, cfg, self.mesh,
                                show_progress=self.show_progress)
    valid = evaluate(eval_step, state, self.data[2], self.data[3], cfg.eval_batch_size, self.mesh)
    acc = valid["accuracy"]
    return {"accuracy": float(acc) if np.isfinite(acc) else float("nan"), "loss": float(valid["loss"]),
            "train_loss": history[-1]["train_loss"], "params": self.genotype_params(arch),
            "cost_s": time.perf_counter() - t0, "epochs": cfg.epochs}
