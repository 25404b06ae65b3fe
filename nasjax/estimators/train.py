"""Low-fidelity training estimator: train a candidate briefly from scratch, report validation accuracy.

Two ways to build the candidate, chosen by ``model``:

* ``"supernet"``: the discrete path of the cell supernet (``Supernet`` in discrete mode, freshly
  initialised for every candidate): the architecture is an argument of one compiled training step
  (each edge a ``lax.switch`` over its candidate ops, only the chosen one computed), so a whole search
  compiles once, whatever number of candidates it trains. Each step costs somewhat more than the
  stand-alone network's (the switches and the recomputed edges), and that compile is larger.
* ``"network"``: the stand-alone ``Network`` of each genotype (only its chosen ops, nothing else). Each
  candidate compiles its own program.
* ``"auto"`` (default): whichever :func:`choose_model` predicts faster for ``num_candidates`` trainings
  of ``cfg.epochs`` epochs. The choice depends only on the settings, never on a clock, so the same
  settings give the same search on every machine.

Fidelity knobs (epochs, channels, cells, data subset) are config fields, the axes that successive
halving and Hyperband move along (Li et al., JMLR 2018); ``fidelity_epochs`` gives one epoch count per
level, and each level's learning-rate schedule spans its own epochs, as a genuinely shorter training does.
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
from nasjax.train import darts_eval_config
from nasjax.training import (evaluate, init_state, make_eval_step, make_optimizer, make_train_step,
                             network_model_fn, run_epochs)


def short_training_config() -> ml_collections.ConfigDict:
  cfg = darts_eval_config()
  # Batch 32 at learning rate 0.05: twice the steps of batch 64 in the same time; after one epoch on the
  # embedded data random DARTS cells reach ~70% validation accuracy instead of ~50% at 64 / 0.025.
  cfg.update(epochs=1, batch_size=32, learning_rate=0.05, channels=8, layers=3, cutout=0, flip=False,
             drop_path=0.0, auxiliary=False, valid_fraction=0.2, train_subset=0, eval_batch_size=250)
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


MODELS = ("auto", "network", "supernet")

# Costs of the two candidate models in units of one training step of the stand-alone network, measured
# in CPU seconds by `benchmarks/estimator_compile.py --parts` (DARTS cells, 8 channels, 3 cells, batch 32
# on 28x28 images, XLA:CPU): a network's initialisation and train- and eval-step compilation cost ~135 of
# its steps, paid by every candidate; the supernet's ~300, paid once per search; a step of the supernet's
# discrete path costs ~1.4 network steps.
NETWORK_COMPILE_STEPS = 135.0
SUPERNET_COMPILE_STEPS = 300.0
SUPERNET_STEP_RATIO = 1.4


def choose_model(num_candidates: int | None, steps_per_candidate: int) -> str:
  """"supernet" when compiling once beats compiling per candidate for this many trainings, else "network".

  Per candidate the network costs ``NETWORK_COMPILE_STEPS + steps`` network steps, the supernet
  ``SUPERNET_COMPILE_STEPS / N + SUPERNET_STEP_RATIO * steps``; without a count (None) a search is
  assumed long, as any strategy but a tiny random search is.
  """
  if num_candidates is None:
    return "supernet" if (SUPERNET_STEP_RATIO - 1) * steps_per_candidate < NETWORK_COMPILE_STEPS else "network"
  n = max(1, int(num_candidates))
  network = n * (NETWORK_COMPILE_STEPS + steps_per_candidate)
  supernet = SUPERNET_COMPILE_STEPS + n * SUPERNET_STEP_RATIO * steps_per_candidate
  return "supernet" if supernet < network else "network"


class ShortTrainingEstimator:
  """``estimator(arch, key, fidelity=None) -> metrics`` for a cell space whose edges express the arch.

  Not jittable (a host loop trains each candidate), so drivers run it serially or as Ray tasks.
  """
  jittable = False
  name = "train"

  def __init__(self, space, dataset: nasdata.Dataset, cfg=None, mesh=None, show_progress=False,
               model: str = "auto", fidelity_epochs: tuple[int, ...] | None = None,
               num_candidates: int | None = None):
    """``num_candidates``: how many trainings the search will ask for (``model="auto"`` decides with it).
    ``fidelity_epochs`` (e.g. ``(1, 3, 9)``) gives the epochs of each fidelity level, so a
    multi-fidelity strategy (Hyperband) calls ``estimator(arch, key, fidelity=level)``."""
    if model not in MODELS:
      raise NasjaxError(f"unknown estimator model {model!r}; accepted: {', '.join(MODELS)}")
    if fidelity_epochs is not None and (not fidelity_epochs or any(int(e) < 1 for e in fidelity_epochs)):
      raise NasjaxError(f"fidelity_epochs must be a non-empty tuple of positive epoch counts, got {fidelity_epochs!r}")
    if num_candidates is not None and (isinstance(num_candidates, bool) or int(num_candidates) < 1):
      raise NasjaxError(f"num_candidates must be a positive count, got {num_candidates!r}")
    if not hasattr(space, "edge_ops"):
      raise NasjaxError(f"the short-training estimator needs a cell space (darts, nasnet, enas_micro), "
                        f"got {getattr(space, 'name', space)!r}")
    self.fidelity_epochs = tuple(int(e) for e in fidelity_epochs) if fidelity_epochs else None
    self.space = space
    self.cfg = cfg or short_training_config()
    self.data = estimation_splits(dataset, self.cfg)
    self.dataset = dataset
    self.mesh = mesh or nasdata.data_mesh()
    self.show_progress = show_progress
    self.steps_per_epoch = nasdata.Batcher(self.data[0], self.data[1], self.cfg.batch_size).steps_per_epoch
    if model == "auto":
      epochs = max(self.fidelity_epochs) if self.fidelity_epochs else self.cfg.epochs
      model = choose_model(num_candidates, epochs * self.steps_per_epoch)
    self.model = model
    self._steps: dict[int, tuple] = {}  # epochs -> (optimizer, train step, eval step) of the supernet
    if model == "supernet":
      self._build_supernet(dataset)

  @property
  def num_fidelities(self) -> int:
    return len(self.fidelity_epochs) if self.fidelity_epochs else 1

  def _build_supernet(self, dataset) -> None:
    self.net = Supernet.for_space(self.space, channels=self.cfg.channels, layers=self.cfg.layers,
                                  num_classes=dataset.num_classes, affine=True)
    sample_x = jnp.zeros((2,) + dataset.input_shape, jnp.float32)
    sample_arch = jnp.zeros((2, self.space.num_edges), jnp.int32)
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
    self._model_fn = model_fn
    self._eval_step = make_eval_step(model_fn, dataset.mean, dataset.std)

  def _supernet_steps(self, epochs: int):
    """The optimizer and compiled steps for trainings of ``epochs`` epochs: one program per fidelity level,
    shared by every candidate (the architecture is the state's ``extra``, an array)."""
    if epochs not in self._steps:
      cfg = self.cfg.copy_and_resolve_references()
      cfg.epochs = epochs
      tx = make_optimizer(cfg, self.steps_per_epoch)
      self._steps[epochs] = (tx, make_train_step(self._model_fn, tx, cfg, self.dataset.mean, self.dataset.std))
    return self._steps[epochs]

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
    if fidelity is not None:
      if self.fidelity_epochs is None:
        raise NasjaxError("this estimator has no fidelity levels; build it with fidelity_epochs=(...)")
      level = int(fidelity)
      if not 0 <= level < len(self.fidelity_epochs):
        raise NasjaxError(f"fidelity level {level} outside 0..{len(self.fidelity_epochs) - 1}")
      cfg.epochs = self.fidelity_epochs[level]
    t0 = time.perf_counter()
    if self.model == "supernet":
      extra = jnp.asarray(self.space.edge_ops(jnp.asarray(arch)), jnp.int32)
      tx, train_step = self._supernet_steps(cfg.epochs)
      model_init, eval_step = self._model_init, self._eval_step
    else:
      extra = None
      tx = make_optimizer(cfg, self.steps_per_epoch)
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
