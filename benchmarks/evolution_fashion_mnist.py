"""Regularized evolution on Fashion-MNIST under one fixed training budget, with three ways to spend it:
cheap low-fidelity training, learning-curve early termination, and network-morphism warm starts.

The question (a fixed compute budget, which performance estimator finds the better network?) is the one
the NAS literature asks of its speed-up tricks. All three arms search the same chain-structured macro space
(Zoph & Le, "Neural Architecture Search with Reinforcement Learning", ICLR 2017; Elsken, Metzen & Hutter,
"Neural Architecture Search: A Survey", JMLR 2019) with the same strategy and seed, regularized (aging)
evolution (Real, Aggarwal, Huang & Le, "Regularized Evolution for Image Classifier Architecture Search",
AAAI 2019), and differ only in how a candidate is evaluated:

* ``low``: trained from scratch for ``--low-epochs`` on a class-balanced subset of the training set; the
  fitness is the accuracy on a held-out, stratified split of the training set.
* ``early``: the same, but trained for up to ``--max-epochs`` through learning-curve early termination
  (Domhan, Springenberg & Hutter, "Speeding up Automatic Hyperparameter Optimization of Deep Neural
  Networks by Extrapolation of Learning Curves", IJCAI 2015): a run stops once the extrapolated curve gives
  it less than ``--threshold`` probability of beating the best completed run.
* ``morphism``: evolution's mutation is replaced by a function-preserving network morphism of the parent
  (Net2Net: Chen, Goodfellow & Shlens, ICLR 2016; Wei et al., "Network Morphism", ICML 2016), and the
  child starts from the parent's trained weights and is fine-tuned for ``--finetune-epochs``, as in NASH
  (Elsken, Metzen & Hutter, "Simple and Efficient Architecture Search for CNNs", ICLR-W 2018) and LEMONADE
  (ICLR 2019). The initial population, and a child of a parent no morphism applies to, train from scratch.

The budget is counted in training epochs over the search subset, not in evaluations: each arm keeps
evaluating until ``--budget-epochs`` epochs are spent. The evaluation running when the budget runs out is
cut there; its epochs count as used, its result is discarded, so every arm trains exactly the budget
(``images_trained`` = epochs x images per epoch). Then the best architecture of each arm is retrained from
scratch on the training set for ``--retrain-epochs`` and measured on the test set. Fashion-MNIST: Xiao,
Rasul & Vollgraf, arXiv:1708.07747, 2017.

A few-minute CPU run:

    python benchmarks/evolution_fashion_mnist.py --subset 2000 --budget-epochs 30 --low-epochs 2 \\
        --max-epochs 6 --finetune-epochs 1 --retrain-epochs 2 --population 5 --tournament 2 \\
        --out /tmp/evo_fmnist --json /tmp/evo_fmnist.json

Each arm writes ``--out/<arm>/search/evaluations.jsonl`` (the search log of :func:`nasjax.search.run`,
which is also its checkpoint), ``search.json`` when its search is done, ``retrain/`` checkpoints and
``retrain.json``. Rerunning a command resumes an interrupted arm and reuses finished stages; a larger
``--budget-epochs`` continues the logged search (the search is a pure function of its key and results), a
smaller one reads the prefix of the log that fits. The script prints one JSON object and writes it to
``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from nasjax import data as nasdata
from nasjax import search
from nasjax.errors import NasjaxError
from nasjax.utils.stages import check_counts, environment, load_finished, report_main, write_json_atomic
from nasjax.estimators.curves import EarlyStoppingEstimator, default_min_epochs, make_epoch_fn
from nasjax.estimators.morphism import (KINDS, MorphismEstimator, applicable_morphs, morphism_mutation,
                                        morphism_training_config)
from nasjax.nn.chain_network import chain_model_fn, chain_network, init_variables
from nasjax.spaces.macro import MacroSpace, macro_space
from nasjax.strategies.base import Strategy
from nasjax.strategies.evolution import regularized_evolution
from nasjax.train import config_to_dict, fit
from nasjax.train import init_key as train_init_key

# The shared data folder beside the repository (``../shared/data``), or ``$NASJAX_SHARED_DATA`` when set.
SHARED_DATA = os.environ.get("NASJAX_SHARED_DATA") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
DEFAULT_DATA = os.path.join(SHARED_DATA, "fashion_mnist.npz")
ARMS = ("low", "early", "morphism")
# The morphism proposals draw from their own stream of the round's key, so the tournament (and the initial
# samples) see exactly the keys they see in the other arms.
MORPH_STREAM = 104729


# ---------------------------------------------------------------------------------------------- options
def _int_list(text: str, option: str) -> tuple[int, ...]:
  try:
    values = tuple(int(v) for v in text.split(",") if v.strip())
  except ValueError:
    values = ()
  if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
    raise NasjaxError(f"{option} must be distinct positive integers separated by commas; got {text!r}")
  return values


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data", default=DEFAULT_DATA,
                 help="a .npz with x_train, y_train, x_test, y_test (default: fashion_mnist.npz in "
                      "$NASJAX_SHARED_DATA, else in ../shared/data beside the repository)")
  p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, among {', '.join(ARMS)}")
  p.add_argument("--subset", type=int, default=10000,
                 help="training images every candidate trains on (class-balanced subset)")
  p.add_argument("--valid", type=int, default=None,
                 help="held-out training images whose accuracy is the fitness (default: subset / 4)")
  p.add_argument("--budget-epochs", type=int, default=300, help="training epochs over the subset, per arm")
  p.add_argument("--low-epochs", type=int, default=4, help="epochs of a from-scratch evaluation (low, morphism)")
  p.add_argument("--max-epochs", type=int, default=20, help="epochs of a full run of the early arm")
  p.add_argument("--min-epochs", type=int, default=None,
                 help="epochs before the first early-termination check (default: max(5, max-epochs / 10))")
  p.add_argument("--threshold", type=float, default=0.05,
                 help="early arm: stop a run whose P(final > best so far) is below this")
  p.add_argument("--finetune-epochs", type=int, default=2, help="epochs of a warm-started morphism child")
  p.add_argument("--retrain-epochs", type=int, default=20)
  p.add_argument("--retrain-subset", type=int, default=0, help="training images of the retraining; 0 = all")
  p.add_argument("--population", type=int, default=20)
  p.add_argument("--tournament", type=int, default=5)
  p.add_argument("--layers", type=int, default=5, help="layers of the macro space")
  p.add_argument("--filters", default="8,16,24", help="filter counts the macro space offers")
  p.add_argument("--kernels", default="1,3,5", help="kernel sizes the macro space offers")
  p.add_argument("--batch-size", type=int, default=64)
  # A pilot on this data: 0.1 learns far more in a few epochs than DARTS' 0.025 (tuned for 600 epochs);
  # the fine-tuning rate keeps the ratio of morphism_training_config (0.01 / 0.025).
  p.add_argument("--learning-rate", type=float, default=0.1)
  p.add_argument("--finetune-learning-rate", type=float, default=0.04)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="runs/evolution_fashion_mnist", help="work directory (logs, checkpoints)")
  p.add_argument("--json", default=None, help="also write the printed JSON object here")
  p.add_argument("--quiet", action="store_true", help="no progress lines")
  args = p.parse_args(argv)
  if os.path.exists(args.data):
    # One spelling per file, so a rerun from another directory still finds its finished stages.
    args.data = os.path.realpath(args.data)
  arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
  unknown = [a for a in arms if a not in ARMS]
  if not arms or unknown or len(set(arms)) != len(arms):
    raise NasjaxError(f"--arms must be distinct names among {', '.join(ARMS)}; got {args.arms!r}")
  args.arms = arms
  args.filters = _int_list(args.filters, "--filters")
  args.kernels = _int_list(args.kernels, "--kernels")
  if args.valid is None:
    args.valid = max(1, args.subset // 4)
  check_counts(args, positive=("subset", "valid", "budget_epochs", "low_epochs", "max_epochs", "finetune_epochs",
                               "retrain_epochs", "population", "tournament", "layers", "batch_size"),
               non_negative=("retrain_subset", "seed"))
  if args.min_epochs is not None and not 1 <= args.min_epochs <= args.max_epochs:
    raise NasjaxError(f"--min-epochs must lie in 1..--max-epochs ({args.max_epochs}); got {args.min_epochs}")
  if not 0.0 < args.threshold < 1.0:
    raise NasjaxError(f"--threshold must be a probability in (0, 1); got {args.threshold}")
  for name in ("learning_rate", "finetune_learning_rate"):
    value = getattr(args, name)
    if not (math.isfinite(value) and value > 0):
      raise NasjaxError(f"--{name.replace('_', '-')} must be a positive number; got {value}")
  if args.tournament > args.population:
    raise NasjaxError(f"--tournament ({args.tournament}) must not exceed --population ({args.population})")
  if args.subset < args.batch_size:
    raise NasjaxError(f"--subset {args.subset} is smaller than one batch of {args.batch_size}; use at least "
                      "--batch-size images")
  return args


def make_space(args) -> MacroSpace:
  """The searched space: every layer type, the given kernels and filters, strides 1 and 2, skips."""
  return macro_space(args.layers, kernel_sizes=args.kernels, filters=args.filters, strides=(1, 2))


def space_settings(space: MacroSpace) -> dict:
  return {"name": space.name, "num_layers": space.num_layers, "layer_types": list(space.layer_types),
          "kernel_sizes": list(space.kernel_sizes), "filters": list(space.filters),
          "strides": list(space.strides), "skips": space.skips}


def search_config(args):
  """The training protocol of every search evaluation (all arms): morphism_training_config with the
  command line's epochs, rates and batch size; ``valid_fraction`` carves ``--valid`` images off the search
  data. The early arm trains under the same config with ``epochs = --max-epochs``."""
  cfg = morphism_training_config()
  cfg.update(epochs=args.low_epochs, finetune_epochs=args.finetune_epochs, learning_rate=args.learning_rate,
             finetune_learning_rate=args.finetune_learning_rate, batch_size=args.batch_size, seed=args.seed,
             valid_fraction=args.valid / (args.subset + args.valid), train_subset=0)
  return cfg


def retrain_config(args):
  cfg = search_config(args)
  cfg.update(epochs=args.retrain_epochs, train_subset=args.retrain_subset)
  return cfg


# ---------------------------------------------------------------------------------------------- data
def search_dataset(dataset: nasdata.Dataset, args) -> nasdata.Dataset:
  """A class-balanced subset of ``--subset + --valid`` training images, as a Dataset whose estimators split
  it (stratified, ``search_config().valid_fraction``) into the candidates' training and validation parts.

  Reducing the data set itself, rather than only the training part, keeps the validation split small:
  evaluating every epoch on a fifth of 60,000 images would cost more than the training. The normalisation
  statistics stay those of the full training set, which the retraining uses too.
  """
  total = args.subset + args.valid
  if total > len(dataset.x_train):
    raise NasjaxError(f"--subset + --valid ({total}) exceeds the {len(dataset.x_train)} training images of "
                      f"{args.data}")
  x, y = nasdata.subset(dataset.x_train, dataset.y_train, total, args.seed)
  return dataclasses.replace(dataset, x_train=x, y_train=y)


def split_search_data(dataset: nasdata.Dataset, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(x_train, y_train, x_valid, y_valid) exactly as :class:`MorphismEstimator` splits ``dataset``, so the
  three arms train and validate on the same images."""
  x_tr, y_tr, x_va, y_va = nasdata.train_valid_split(dataset.x_train, dataset.y_train, cfg.valid_fraction,
                                                     cfg.seed)
  if cfg.train_subset:
    x_tr, y_tr = nasdata.subset(x_tr, y_tr, cfg.train_subset, cfg.seed)
  return x_tr, y_tr.astype(np.int32), x_va, y_va.astype(np.int32)


# ---------------------------------------------------------------------------------------------- budget
class BudgetSpent(Exception):
  """The arm's epoch budget ran out. Deliberately not a NasjaxError: ``search.run`` lets it through
  without logging the cut evaluation, and the arm's search ends there."""


class EpochMeter:
  """Counts the training epochs of one arm against its budget.

  ``charge(n)`` books ``n`` epochs about to be trained and raises :class:`BudgetSpent` when none is left;
  ``cut_epochs`` / ``cut_seconds`` are what the evaluation cut by the budget spent.
  """

  def __init__(self, budget_epochs: int, spent: int = 0):
    self.budget = int(budget_epochs)
    self.spent = int(spent)
    self.cut_epochs = 0
    self.cut_seconds = 0.0

  @property
  def remaining(self) -> int:
    return max(0, self.budget - self.spent)

  def charge(self, epochs: int = 1) -> None:
    if epochs > self.remaining:
      raise BudgetSpent(f"{self.spent} of {self.budget} epochs spent")
    self.spent += int(epochs)


def _seed_of(key: jax.Array) -> int:
  """The training seed of an evaluation key, derived as MorphismEstimator derives it, so the same
  architecture and key train the identical run in every arm that trains it from scratch."""
  _, seed_key = jax.random.split(key)
  return int(jax.random.randint(seed_key, (), 0, 2**31 - 1))


class ScratchTraining:
  """Low-fidelity estimator: trains a macro architecture from scratch for ``cfg.epochs`` and reports the
  last epoch's validation accuracy (``"accuracy"``; NaN when the loss diverged).

  Every epoch is charged to ``meter`` before it runs. :meth:`make_run` is the ``make_run`` of
  :class:`EarlyStoppingEstimator`, so the early arm trains candidates exactly like this one.
  """

  def __init__(self, space: MacroSpace, dataset: nasdata.Dataset, cfg, meter: EpochMeter, mesh=None):
    self.space = space
    self.dataset = dataset
    self.cfg = cfg
    self.meter = meter
    self.data = split_search_data(dataset, cfg)
    self.mesh = mesh or nasdata.data_mesh()

  def make_run(self, arch, key):
    if self.meter.remaining <= 0:
      raise BudgetSpent("no epoch left")  # before compiling a run that could not train
    network = chain_network(self.space, self.space.check(arch), self.dataset.num_classes,
                            self.dataset.input_shape)
    seed = _seed_of(key)
    cfg = self.cfg.copy_and_resolve_references()
    cfg.seed = seed
    variables = jax.jit(lambda k: init_variables(network, k))(train_init_key(seed))
    x_tr, y_tr, x_va, y_va = self.data
    state, epoch_fn = make_epoch_fn(chain_model_fn(network), variables, cfg, x_tr, y_tr, x_va, y_va,
                                    mean=self.dataset.mean, std=self.dataset.std, seed=seed, mesh=self.mesh)

    def metered_epoch(state, epoch):
      self.meter.charge(1)
      return epoch_fn(state, epoch)

    return state, metered_epoch

  def __call__(self, arch, key) -> dict:
    state, epoch_fn = self.make_run(arch, key)
    curve = []
    for epoch in range(self.cfg.epochs):
      state, accuracy = epoch_fn(state, epoch)
      curve.append(float(accuracy))
      if not math.isfinite(accuracy):
        break
    return {"accuracy": curve[-1] if math.isfinite(curve[-1]) else float("nan"), "curve": curve,
            "epochs": len(curve)}


class MeteredMorphism:
  """:class:`MorphismEstimator` charged to an epoch meter, its archive saved after every evaluation.

  The estimator trains its epochs in one call, so the budget is enforced by lowering the config's epochs
  to what is left for that call; a run lowered that way is cut, i.e. charged and then discarded
  (:class:`BudgetSpent`), like a run the other arms' meters stop mid-way.
  """

  def __init__(self, estimator: MorphismEstimator, meter: EpochMeter, archive_path: str | None = None):
    self.estimator = estimator
    self.meter = meter
    self.archive_path = archive_path

  def __call__(self, arch, key) -> dict:
    left = self.meter.remaining
    if left <= 0:
      raise BudgetSpent("no epoch left")
    cfg = self.estimator.cfg
    planned = {"scratch": int(cfg.epochs), "warm": int(cfg.finetune_epochs)}
    cfg.epochs, cfg.finetune_epochs = min(planned["scratch"], left), min(planned["warm"], left)
    try:
      metrics = self.estimator(arch, key)
    finally:
      cfg.epochs, cfg.finetune_epochs = planned["scratch"], planned["warm"]
    wanted = planned["warm"] if metrics["warm_start"] else planned["scratch"]
    self.meter.spent += int(metrics["epochs"])
    if wanted > left:
      raise BudgetSpent(f"cut after {metrics['epochs']} of {wanted} epochs")
    for entry in self.estimator.archive.values():
      # MorphismEstimator.load compares against init_variables, which has no "batch_stats" for a network
      # without BatchNorm, while the archive stores an empty one; dropping it (nothing reads it) lets such
      # entries load and keeps the in-memory archive equal to a reloaded one.
      if "batch_stats" in entry["variables"] and not jax.tree_util.tree_leaves(entry["variables"]["batch_stats"]):
        entry["variables"] = {k: v for k, v in entry["variables"].items() if k != "batch_stats"}
    if self.archive_path:
      # Write-then-rename: a killed run leaves the previous archive, never half of one.
      self.estimator.save(self.archive_path + ".tmp")
      os.replace(self.archive_path + ".tmp", self.archive_path)
    return metrics


class TimedEstimator:
  """Times every evaluation, so the seconds of the one cut by the budget are reported too; prints one
  progress line per finished evaluation."""

  def __init__(self, name: str, estimator, meter: EpochMeter, space: MacroSpace, verbose: bool):
    self.name, self.estimator, self.meter, self.space, self.verbose = name, estimator, meter, space, verbose
    self.calls = 0

  def __call__(self, arch, key) -> dict:
    t0 = time.perf_counter()
    spent0 = self.meter.spent
    try:
      metrics = self.estimator(arch, key)
    except BudgetSpent:
      self.meter.cut_epochs = self.meter.spent - spent0
      self.meter.cut_seconds = time.perf_counter() - t0
      raise
    self.calls += 1
    if self.verbose:
      extra = ""
      if metrics.get("stopped_early"):
        extra = " (stopped early)"
      elif metrics.get("warm_start"):
        extra = f" (warm start, {metrics['morph']})"
      print(f"[{self.name}] {self.meter.spent}/{self.meter.budget} epochs: accuracy "
            f"{metrics['accuracy']:.4f} after {metrics['epochs']} epochs{extra}, "
            f"{time.perf_counter() - t0:.1f} s  {self.space.to_string(np.asarray(arch))}", file=sys.stderr)
    return metrics


# ---------------------------------------------------------------------------------------------- strategies
def jitted(strategy: Strategy) -> Strategy:
  """The same strategy with ``init``, ``ask`` and ``tell`` compiled once (a resumed search replays its
  whole log through them)."""
  return strategy._replace(init=jax.jit(strategy.init), ask=jax.jit(strategy.ask), tell=jax.jit(strategy.tell))


class _ParentsOnly:
  """``space`` with the identity as mutation: regularized evolution over it asks, in the rows it breeds,
  the tournament winners themselves, which the morphism strategy then mutates on the host."""

  def __init__(self, space):
    self._space = space

  def __getattr__(self, name):
    if name == "_space":  # not yet set (copy, pickle): no endless recursion
      raise AttributeError(name)
    return getattr(self._space, name)

  def mutate(self, key, arch):
    del key
    return jnp.asarray(arch, jnp.int32)


def _placeholder_variables(space: MacroSpace, arch: np.ndarray, input_shape, num_classes: int) -> dict:
  shapes = jax.eval_shape(lambda k: init_variables(chain_network(space, arch, num_classes, input_shape), k),
                          jax.random.key(0))
  return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def morphism_child(space: MacroSpace, key: jax.Array, parent, input_shape, num_classes: int,
                   kinds=KINDS) -> np.ndarray:
  """The child encoding that ``MorphismEstimator.mutate(key, parent)`` proposes, without the trained
  weights: the transform and hence the encoding depend only on the key and the parent's encoding, so a
  resumed search re-asks the same children. A parent no morphism applies to (every layer at the largest
  width, no identity layer to deepen, no skip left) gets the space's ordinary mutation, and its child
  trains from scratch."""
  parent = space.check(parent)
  if not applicable_morphs(space, parent, input_shape, kinds):
    return np.asarray(space.mutate(key, jnp.asarray(parent)), np.int32)
  child, _, _ = morphism_mutation(space, key, parent,
                                  _placeholder_variables(space, parent, input_shape, num_classes),
                                  input_shape=input_shape, kinds=kinds)
  return np.asarray(child, np.int32)


def morphism_evolution(space: MacroSpace, input_shape, num_classes: int, population_size: int,
                       tournament_size: int, kinds=KINDS) -> Strategy:
  """Regularized evolution whose mutation is a network morphism of the tournament winner.

  Selection, aging and failure handling are those of :func:`regularized_evolution` (its state is this
  strategy's state); the initial population is the same random sample for the same key. ``ask`` runs on
  the host (morphisms plan networks), so this strategy does not jit or vmap.
  """
  inner = jitted(regularized_evolution(_ParentsOnly(space), population_size, tournament_size))

  def ask(state, key):
    filled = int(state["filled"])
    rows, state = inner.ask(state, key)
    rows = np.asarray(rows, np.int32)
    morph_key = jax.random.fold_in(key, MORPH_STREAM)
    out = rows.copy()
    for j in range(len(rows)):
      # The rows regularized evolution fills with fresh samples while the population is incomplete.
      if filled == 0 or filled + j < population_size:
        continue
      out[j] = morphism_child(space, jax.random.fold_in(morph_key, j), rows[j], input_shape, num_classes, kinds)
    return jnp.asarray(out), state

  return Strategy(inner.init, ask, inner.tell, name="regularized_evolution+morphism")


# ---------------------------------------------------------------------------------------------- one arm
def read_log(workdir: str) -> list[dict]:
  """The records of ``workdir/evaluations.jsonl`` (JSON only); a line cut by a killed run ends them."""
  path = os.path.join(workdir, "evaluations.jsonl")
  records = []
  if not os.path.exists(path):
    return records
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return records


def _epochs(record: dict) -> int:
  return int(record.get("metrics", {}).get("epochs", 0) or 0)


def within_budget(records: list[dict], budget: int) -> tuple[list[dict], int]:
  """The records whose evaluations finish within ``budget`` epochs, and the epochs they used."""
  kept, used = [], 0
  for r in records:
    if used + _epochs(r) > budget:
      break
    kept.append(r)
    used += _epochs(r)
  return kept, used


def best_record(records: list[dict]) -> dict | None:
  """The fittest successful evaluation; among the early arm's, only runs trained to the end compete (a
  stopped run's fitness is a prediction)."""
  ok = [r for r in records if not r["failed"] and r["metrics"].get("accuracy") is not None
        and math.isfinite(r["metrics"]["accuracy"])]
  completed = [r for r in ok if not r["metrics"].get("stopped_early", False)]
  pool = completed or ok
  return max(pool, key=lambda r: r["metrics"]["accuracy"]) if pool else None


def arm_identity(arm: str, args, space: MacroSpace, cfg) -> dict:
  """What determines the sequence of evaluations of an arm (the budget only decides where it ends)."""
  identity = {"arm": arm, "data": args.data, "subset": args.subset, "valid": args.valid, "seed": args.seed,
              "space": space_settings(space), "population": args.population, "tournament": args.tournament,
              "config": config_to_dict(cfg)}
  if arm == "early":
    identity.update(max_epochs=args.max_epochs, min_epochs=args.min_epochs, threshold=args.threshold)
  if arm == "morphism":
    identity.update(kinds=list(KINDS))
  return identity


def build_arm(arm: str, args, space: MacroSpace, data: nasdata.Dataset, cfg, meter: EpochMeter, workdir: str):
  """(strategy, estimator) of ``arm``, with the estimator's state restored from ``workdir``."""
  if arm == "low":
    return (jitted(regularized_evolution(space, args.population, args.tournament)),
            ScratchTraining(space, data, cfg, meter))
  if arm == "early":
    long_cfg = cfg.copy_and_resolve_references()
    long_cfg.epochs = args.max_epochs
    estimator = EarlyStoppingEstimator(ScratchTraining(space, data, long_cfg, meter).make_run, args.max_epochs,
                                       threshold=args.threshold, min_epochs=args.min_epochs)
    if read_log(workdir):
      estimator.restore(workdir)  # best_so_far decides later stops: resume it from the log
    return jitted(regularized_evolution(space, args.population, args.tournament)), estimator
  # Every member of the population must stay archived to be a warm-start parent.
  estimator = MorphismEstimator(space, data, cfg.copy_and_resolve_references(),
                                archive_size=max(64, 2 * args.population))
  archive_path = os.path.join(workdir, "archive.msgpack")
  if os.path.exists(archive_path):
    estimator.load(archive_path)
  strategy = morphism_evolution(space, data.input_shape, data.num_classes, args.population, args.tournament)
  return strategy, MeteredMorphism(estimator, meter, archive_path)




def search_arm(arm: str, args, space: MacroSpace, data: nasdata.Dataset, outdir: str) -> dict:
  """Runs (or resumes, or reuses) the search of ``arm`` until its epoch budget is spent."""
  cfg = search_config(args)
  identity = arm_identity(arm, args, space, cfg)
  settings = dict(identity, budget_epochs=args.budget_epochs)
  done_path = os.path.join(outdir, "search.json")
  done = load_finished(done_path, settings)
  if done is not None:
    return done
  workdir = os.path.join(outdir, "search")
  logged_epochs = sum(_epochs(r) for r in read_log(workdir))
  # A log of a longer search (a larger budget before) already answers this one: evaluate nothing new.
  meter = EpochMeter(args.budget_epochs, min(logged_epochs, args.budget_epochs))
  strategy, estimator = build_arm(arm, args, space, data, cfg, meter, workdir)
  timer = TimedEstimator(arm, estimator, meter, space, not args.quiet)
  t0 = time.perf_counter()
  try:
    # Every evaluation trains at least one epoch, so budget + 1 evaluations always end in BudgetSpent.
    search.run(strategy, timer, args.budget_epochs + 1, jax.random.key(args.seed), workdir=workdir,
               identity=identity, show_progress=False, to_string=space.to_string)
  except BudgetSpent:
    pass
  wall = time.perf_counter() - t0
  records, used = within_budget(read_log(workdir), args.budget_epochs)
  # The cut run: measured when it ran here; when a longer logged search is reused, the run that straddles
  # the budget would have been cut where the budget ends.
  cut_epochs = meter.cut_epochs if logged_epochs <= args.budget_epochs else args.budget_epochs - used
  best = best_record(records)
  if best is None:
    raise NasjaxError(f"[{arm}] no evaluation succeeded within {args.budget_epochs} epochs; raise "
                      "--budget-epochs or lower the learning rate")
  split = split_search_data(data, cfg)
  images_per_epoch = nasdata.Batcher(split[0], split[1], cfg.batch_size).steps_per_epoch * cfg.batch_size
  metrics = [r["metrics"] for r in records]
  stage = {
      "settings": settings,
      "strategy": strategy.name,
      "best_arch": best["arch"],
      "best_genotype": best.get("genotype", space.to_string(np.asarray(best["arch"]))),
      "best_valid": best["metrics"]["accuracy"],
      "best_index": best["index"],
      "epochs_used": used + cut_epochs,
      "images_per_epoch": images_per_epoch,
      "images_trained": (used + cut_epochs) * images_per_epoch,
      "evaluations": len(records),
      "failed_evaluations": sum(r["failed"] for r in records),
      "cut_epochs": cut_epochs,
      # Evaluation time as logged (resume-proof) plus the cut run; the rest of the wall time is replay.
      "seconds": sum(r["seconds"] for r in records) + meter.cut_seconds,
      "search_wall_seconds": wall,
      "initial_archs": [r["arch"] for r in records[:args.population]],
  }
  if arm == "early":
    stage["stopped_early"] = sum(bool(m.get("stopped_early")) for m in metrics)
    stage["epochs_saved"] = sum(int(m.get("epochs_saved", 0)) for m in metrics)
  if arm == "morphism":
    stage["warm_starts"] = sum(bool(m.get("warm_start")) for m in metrics)
    stage["morphs"] = {k: sum(m.get("morph") == k for m in metrics) for k in KINDS}
  write_json_atomic(done_path, stage)
  return stage


def retrain_arm(space: MacroSpace, arch, dataset: nasdata.Dataset, args, outdir: str) -> dict:
  """Trains ``arch`` from scratch on the training set (``--retrain-subset`` of it, if given) for
  ``--retrain-epochs`` and measures test accuracy; checkpointed, resumed and reused like the search."""
  cfg = retrain_config(args)
  arch = space.check(arch)
  settings = {"data": args.data, "space": space_settings(space), "arch": arch.tolist(),
              "config": config_to_dict(cfg)}
  done_path = os.path.join(outdir, "retrain.json")
  done = load_finished(done_path, settings)
  if done is not None:
    return done
  network = chain_network(space, arch, dataset.num_classes, dataset.input_shape)
  x_train, y_train = dataset.x_train, dataset.y_train
  if cfg.train_subset:
    x_train, y_train = nasdata.subset(x_train, y_train, cfg.train_subset, cfg.seed)
  t0 = time.perf_counter()
  result = fit(chain_model_fn(network), lambda k: init_variables(network, k), cfg, x_train,
               np.asarray(y_train, np.int32), dataset.x_test, np.asarray(dataset.y_test, np.int32),
               mean=dataset.mean, std=dataset.std, workdir=os.path.join(outdir, "retrain"), identity=settings,
               show_progress=not args.quiet, eval_every_epoch=False)
  params = sum(int(np.prod(np.shape(v))) for v in jax.tree_util.tree_leaves(result.state["params"]))
  stage = {"settings": settings, "test_accuracy": result.final["eval_accuracy"],
           "test_loss": result.final["eval_loss"], "final_train_accuracy": result.final["train_accuracy"],
           "params": params, "retrain_images": int(len(x_train)),
           "retrain_seconds": time.perf_counter() - t0}
  write_json_atomic(done_path, stage)
  return stage


# ---------------------------------------------------------------------------------------------- main
def run(args) -> dict:
  t_start = time.perf_counter()
  dataset = nasdata.load_dataset(args.data)
  space = make_space(args)
  data = search_dataset(dataset, args)
  cfg = search_config(args)
  x_tr, _, x_va, _ = split_search_data(data, cfg)
  os.makedirs(args.out, exist_ok=True)
  report = {
      "benchmark": "evolution_fashion_mnist",
      "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                   if k not in ("quiet", "json")},
      "data": {"name": dataset.name, "train_images": int(len(dataset.x_train)),
               "test_images": int(len(dataset.x_test)), "input_shape": list(dataset.input_shape),
               "search_train_images": int(len(x_tr)), "search_valid_images": int(len(x_va))},
      "space": dict(space_settings(space), size=space.size),
      "search_config": config_to_dict(cfg),
      "retrain_config": config_to_dict(retrain_config(args)),
      "early_min_epochs": args.min_epochs if args.min_epochs is not None else default_min_epochs(args.max_epochs),
      **environment(),
      "arms": {},
  }
  for arm in args.arms:
    outdir = os.path.join(args.out, arm)
    os.makedirs(outdir, exist_ok=True)
    found = search_arm(arm, args, space, data, outdir)
    trained = retrain_arm(space, found["best_arch"], dataset, args, outdir)
    entry = {k: v for k, v in found.items() if k != "settings"}
    entry.update({k: v for k, v in trained.items() if k != "settings"})
    report["arms"][arm] = entry
    if not args.quiet:
      print(f"[{arm}] best valid {entry['best_valid']:.4f} after {entry['evaluations']} evaluations, test "
            f"accuracy {entry['test_accuracy']:.4f}, {entry['epochs_used']} epochs "
            f"({entry['images_trained']} images), search {entry['seconds']:.0f} s, retrain "
            f"{entry['retrain_seconds']:.0f} s", file=sys.stderr)
  report["total_seconds"] = time.perf_counter() - t_start
  return report


def main(argv=None) -> int:
  return report_main(parse_args, run, argv)


if __name__ == "__main__":
  sys.exit(main())
