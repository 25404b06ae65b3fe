"""Low-fidelity training estimator: train a candidate briefly from scratch, report validation accuracy.

Two ways to build the candidate, chosen by ``model``:

* ``"supernet"``: one shared network that takes the architecture as data, freshly initialised for every
  candidate: :class:`~nasjax.nn.cell_network.SharedCellNetwork` (ENAS's node-based cells; each slot's op a
  ``lax.switch``, only the chosen one computed), so a whole search compiles one training step, whatever
  number of candidates it trains. For a fixed architecture it is the genotype's ``Network`` up to the
  parameterisation of its concatenation. ``shared_network="edge"`` takes the edge supernet's discrete path
  instead (``Supernet``; DARTS only: on NASNet and ENAS micro ``edge_ops`` keeps one op of a node that
  reads one input twice and concatenates every node, so the path is not the candidate; it also puts a
  BatchNorm after every pool). Both cost the same at the estimator's size (DARTS, 8 channels, 3 cells,
  batch 32, 28x28x1 on the 2-core CPU: a train step 0.195-0.202 CPU s node-based vs 0.206-0.229 s edge,
  its compile 20.5-23.0 vs 22.4-24.3 CPU s), somewhat more per step than the stand-alone network.
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

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.nn.cell_network import SharedCellNetwork, edge_supernet_is_exact
from nasjax.nn.count import count_params
from nasjax.nn.network import Network
from nasjax.nn.supernet import Supernet
from nasjax.train import darts_eval_config
from nasjax.training import (evaluate, init_state, make_eval_step, make_optimizer, make_train_step,
                             network_model_fn, plain_model_fn, run_epochs)


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


# What TrainingEstimator returns for every candidate (its ``metric_names``, checked against a search's
# objectives before the first training).
TRAINING_METRICS = ("accuracy", "loss", "train_loss", "params", "cost_s", "epochs")
# Robustness of each trained candidate (TrainingEstimator's ``robustness``): validation images attacked or
# corrupted, the L-infinity radius of FGSM and PGD on [0, 1] images (Madry et al.'s CIFAR-10 radius) and
# PGD's steps.
ROBUSTNESS_DEFAULTS = {"images": 256, "epsilon": 8 / 255, "pgd_steps": 10}


def check_robustness(robustness: dict | None) -> dict | None:
  """``robustness`` completed with :data:`ROBUSTNESS_DEFAULTS`, or one line naming what is wrong."""
  if robustness is None:
    return None
  unknown = sorted(set(robustness) - set(ROBUSTNESS_DEFAULTS))
  if unknown:
    raise NasjaxError(f"unknown robustness setting {unknown[0]!r}; accepted: {', '.join(ROBUSTNESS_DEFAULTS)}")
  out = {**ROBUSTNESS_DEFAULTS, **robustness}
  for name in ("images", "pgd_steps"):
    if isinstance(out[name], bool) or not isinstance(out[name], int) or out[name] < 1:
      raise NasjaxError(f"robustness {name} must be a positive integer; got {out[name]!r}")
  eps = out["epsilon"]
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or not 0 <= eps <= 1:
    raise NasjaxError(f"robustness epsilon is an L-infinity radius in [0, 1] on images in [0, 1]; got {eps!r}")
  out["epsilon"] = float(eps)
  return out


MODELS = ("auto", "network", "supernet")
# The shared model behind "supernet": the node-based SharedCellNetwork ("node", exact for every cell space)
# or the edge supernet's discrete path ("edge", DARTS only).
SHARED_NETWORKS = ("node", "edge")

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


@dataclasses.dataclass(frozen=True)
class Model:
  """One candidate's model for the training engine (:mod:`nasjax.training`)."""
  init: Callable[[jax.Array], dict]   # key -> variables
  model_fn: Callable                  # the model_fn contract of nasjax.training
  extra: Any                          # the train state's ``extra`` (the architecture of a switch network)
  params: int                         # parameters of the stand-alone network (the papers' count)
  shared: bool = False                # the same model_fn and init serve every candidate: one program


class TrainingEstimator:
  """``estimator(arch, key, fidelity=None) -> metrics``: a short training from scratch on the training
  engine, then the accuracy on the stratified validation split ``cfg.valid_fraction`` of the training set.

  ``builder(arch) -> Model`` says how a candidate is built. A shared model (the architecture as the
  state's ``extra``) keeps one compiled train and eval step per fidelity level for all candidates; any
  other compiles per candidate. Not jittable (a host loop trains each candidate), so drivers run it
  serially or as Ray tasks.

  ``robustness`` (a dict of :data:`ROBUSTNESS_DEFAULTS`' keys, or ``{}`` for the defaults) adds the
  trained candidate's accuracy on the first ``images`` validation images clean, under common corruptions
  and under FGSM and PGD at ``epsilon`` (:func:`nasjax.estimators.objective_metrics.robustness_metrics`),
  so a multi-objective search can trade accuracy for robustness, as robust NAS does (e.g. Guo et al.,
  "When NAS Meets Robustness", CVPR 2020). ``metric_names`` lists every key an evaluation returns, so
  objectives are checked before the first training.
  """
  jittable = False
  name = "train"

  def __init__(self, builder: Callable[[np.ndarray], Model], dataset: nasdata.Dataset, cfg, *, mesh=None,
               fidelity_epochs: tuple[int, ...] | None = None, show_progress: bool = False,
               robustness: dict | None = None):
    if fidelity_epochs is not None and (not fidelity_epochs or any(int(e) < 1 for e in fidelity_epochs)):
      raise NasjaxError(f"fidelity_epochs must be a non-empty tuple of positive epoch counts, got {fidelity_epochs!r}")
    self.builder = builder
    self.robustness = check_robustness(robustness)
    self.dataset = dataset
    self.cfg = cfg
    self.fidelity_epochs = tuple(int(e) for e in fidelity_epochs) if fidelity_epochs else None
    self.data = estimation_splits(dataset, cfg)
    self.mesh = mesh or nasdata.data_mesh()
    self.show_progress = show_progress
    self.steps_per_epoch = nasdata.Batcher(self.data[0], self.data[1], cfg.batch_size).steps_per_epoch
    self._programs: dict[int, tuple] = {}  # epochs -> (optimizer, train step, eval step) of a shared model
    self._robustness_programs: dict = {}  # a shared model's model_fn -> its jitted robustness metrics

  @property
  def metric_names(self) -> tuple[str, ...]:
    if self.robustness is None:
      return TRAINING_METRICS
    from nasjax.estimators.objective_metrics import robustness_metric_names
    return TRAINING_METRICS + robustness_metric_names(epsilon=self.robustness["epsilon"])

  @property
  def num_fidelities(self) -> int:
    return len(self.fidelity_epochs) if self.fidelity_epochs else 1

  def __getstate__(self) -> dict:
    # A copy (a Ray task's) runs in another process: the mesh names this process's devices and cannot be
    # pickled, and compiled steps belong to this process; the copy builds its own of both.
    state = dict(self.__dict__)
    state["mesh"], state["_programs"], state["_robustness_programs"] = None, {}, {}
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self.mesh = nasdata.data_mesh()

  def programs(self, model: Model, cfg):
    """(optimizer, train step, eval step) of ``model`` trained for ``cfg.epochs``: a shared model keeps one
    compiled pair per epoch count for every candidate, any other gets new ones (its own compile)."""
    if model.shared and cfg.epochs in self._programs:
      return self._programs[cfg.epochs]
    tx = make_optimizer(cfg, self.steps_per_epoch)
    steps = (tx, make_train_step(model.model_fn, tx, cfg, self.dataset.mean, self.dataset.std),
             make_eval_step(model.model_fn, self.dataset.mean, self.dataset.std))
    if model.shared:
      self._programs[cfg.epochs] = steps
    return steps

  def __call__(self, arch, key, fidelity=None) -> dict:
    t0 = time.perf_counter()
    arch = np.asarray(arch)
    cfg = self.cfg.copy_and_resolve_references()
    cfg.seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    if fidelity is not None:
      if self.fidelity_epochs is None:
        raise NasjaxError("this estimator has no fidelity levels; build it with fidelity_epochs=(...)")
      level = int(fidelity)
      if not 0 <= level < len(self.fidelity_epochs):
        raise NasjaxError(f"fidelity level {level} outside 0..{len(self.fidelity_epochs) - 1}")
      cfg.epochs = self.fidelity_epochs[level]
    model = self.builder(arch)
    tx, train_step, eval_step = self.programs(model, cfg)
    state = nasdata.replicate(init_state(model.init, tx, cfg.seed, extra=model.extra), self.mesh)
    batcher = nasdata.Batcher(self.data[0], self.data[1], cfg.batch_size, seed=cfg.seed)
    state, history = run_epochs(train_step, None, state, batcher, cfg, self.mesh,
                                show_progress=self.show_progress)
    valid = evaluate(eval_step, state, self.data[2], self.data[3], cfg.eval_batch_size, self.mesh)
    acc = valid["accuracy"]
    out = {"accuracy": float(acc) if np.isfinite(acc) else float("nan"), "loss": float(valid["loss"]),
           "train_loss": history[-1]["train_loss"], "params": model.params, "epochs": cfg.epochs}
    if self.robustness is not None:
      out.update(self._robustness(model, state, cfg, jax.random.fold_in(key, 1)))
    out["cost_s"] = time.perf_counter() - t0
    return out

  def _robustness(self, model: Model, state, cfg, key) -> dict:
    """Robustness metrics of the trained ``state`` on the first validation images, in chunks of the
    training batch (whose backward pass is known to fit), averaged over the chunks."""
    from nasjax.estimators.objective_metrics import robustness_metrics
    settings = self.robustness
    chunk = min(settings["images"], cfg.batch_size, len(self.data[2]))
    n = min(settings["images"], len(self.data[2])) // chunk * chunk
    images = np.asarray(self.data[2][:n])
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    labels = np.asarray(self.data[3][:n], np.int32)
    fn = self._robustness_programs.get(model.model_fn) if model.shared else None
    if fn is None:  # a shared model compiles its attacks once per search, any other once per candidate
      fn = jax.jit(functools.partial(robustness_metrics, model.model_fn, mean=self.dataset.mean,
                                     std=self.dataset.std, epsilon=settings["epsilon"],
                                     pgd_steps=settings["pgd_steps"]))
      if model.shared:
        self._robustness_programs[model.model_fn] = fn
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    totals: dict[str, float] = {}
    for i, start in enumerate(range(0, n, chunk)):
      part = fn(variables, images[start:start + chunk], labels[start:start + chunk], jax.random.fold_in(key, i),
                extra=state["extra"])
      for k, v in part.items():
        totals[k] = totals.get(k, 0.0) + float(v) / (n // chunk)
    return totals


class ShortTrainingEstimator(TrainingEstimator):
  """The training estimator of a cell space (DARTS, NASNet, ENAS micro), with the model picked by
  ``model`` (see the module docstring)."""

  def __init__(self, space, dataset: nasdata.Dataset, cfg=None, mesh=None, show_progress=False,
               model: str = "auto", fidelity_epochs: tuple[int, ...] | None = None,
               num_candidates: int | None = None, shared_network: str = "node", robustness: dict | None = None):
    """``num_candidates``: how many trainings the search will ask for (``model="auto"`` decides with it).
    ``fidelity_epochs`` (e.g. ``(1, 3, 9)``) gives the epochs of each fidelity level, so a
    multi-fidelity strategy (Hyperband) calls ``estimator(arch, key, fidelity=level)``.
    ``shared_network`` picks the shared model of ``model="supernet"`` (:data:`SHARED_NETWORKS`)."""
    if model not in MODELS:
      raise NasjaxError(f"unknown estimator model {model!r}; accepted: {', '.join(MODELS)}")
    if shared_network not in SHARED_NETWORKS:
      raise NasjaxError(f"unknown shared network {shared_network!r}; accepted: {', '.join(SHARED_NETWORKS)}")
    if num_candidates is not None and (isinstance(num_candidates, bool) or int(num_candidates) < 1):
      raise NasjaxError(f"num_candidates must be a positive count, got {num_candidates!r}")
    if not hasattr(space, "edge_ops"):
      raise NasjaxError(f"the short-training estimator needs a cell space (darts, nasnet, enas_micro), "
                        f"got {getattr(space, 'name', space)!r}")
    self.space = space
    cfg = cfg or short_training_config()
    super().__init__(self._build, dataset, cfg, mesh=mesh, fidelity_epochs=fidelity_epochs,
                     show_progress=show_progress, robustness=robustness)
    if model == "auto":
      epochs = max(self.fidelity_epochs) if self.fidelity_epochs else cfg.epochs
      model = choose_model(num_candidates, epochs * self.steps_per_epoch)
    self.model = model
    self._sample = jnp.zeros((2,) + dataset.input_shape, jnp.float32)
    if shared_network == "edge" and not edge_supernet_is_exact(space):
      raise NasjaxError(f"the edge supernet cannot express {space.name} architectures (a node reading one input "
                        "twice, loose-end concatenation); use shared_network 'node'")
    self.shared_network = shared_network
    if model == "supernet":
      if shared_network == "edge":
        net = Supernet.for_space(space, channels=cfg.channels, layers=cfg.layers,
                                 num_classes=dataset.num_classes, affine=True)
        sample_arch = jnp.zeros((2, space.num_edges), jnp.int32)
        self._to_extra = lambda arch: jnp.asarray(space.edge_ops(jnp.asarray(arch)), jnp.int32)  # noqa: E731
      else:
        net = SharedCellNetwork.for_space(space, channels=cfg.channels, layers=cfg.layers,
                                          num_classes=dataset.num_classes, affine=True)
        sample_arch = jnp.asarray(space.sample(jax.random.key(0)), jnp.int32)
        self._to_extra = lambda arch: jnp.asarray(arch, jnp.int32)  # noqa: E731
      self.net = net
      self._supernet_init = lambda key: net.init(key, self._sample, sample_arch, train=True)
      self._supernet_fn = plain_model_fn(net, takes_arch=True)

  def _build(self, arch) -> Model:
    self.space.check(arch)
    if self.model == "supernet":
      return Model(self._supernet_init, self._supernet_fn, self._to_extra(arch), self.genotype_params(arch),
                   shared=True)
    return cell_network_model(self.space, arch, self.cfg, self.dataset)

  def genotype_params(self, arch) -> int:
    """Parameters of the stand-alone network of ``arch`` at the estimator's size (paper count)."""
    return cell_network_model(self.space, arch, self.cfg, self.dataset).params


def cell_network_model(space, arch, cfg, dataset: nasdata.Dataset) -> Model:
  """The stand-alone ``Network`` of a cell-space architecture as a :class:`Model` (its own program), at
  ``cfg.channels`` channels and ``cfg.layers`` cells, without an auxiliary head."""
  network = Network(space.decode(np.asarray(arch)), cfg.channels, cfg.layers, dataset.num_classes,
                    auxiliary=False)
  sample = jnp.zeros((2,) + tuple(dataset.input_shape), jnp.float32)
  init = lambda k: network.init({"params": k, "dropout": k}, sample)  # noqa: E731
  return Model(init, network_model_fn(network), None,
               count_params(jax.eval_shape(init, jax.random.key(0))["params"]))
