"""Estimators by name: which estimator works on which space, its settings, and how it is built.

A spec names an estimator the way the command line does:

==================  =====================================================  ==========================
spec                what it does                                           spaces
==================  =====================================================  ==========================
``train``           trains each candidate briefly from scratch              darts, nasnet, enas_micro,
                    (validation accuracy); fidelity levels = epochs         nb201, enas_macro, macro,
                                                                            nas_rl
``early_stopping``  trains with learning-curve early termination            darts, nasnet, enas_micro,
                    (Domhan et al. 2015)                                    nb201, macro, nas_rl
``morphism``        warm-starts children from trained parents by network     macro, nas_rl
                    morphisms (NASH / Net2Net)
``weight_sharing``  trains the space's supernet with SPOS first (enas_macro:  darts, nasnet, enas_micro,
                    uniformly sampled paths on the training engine), then   nb201, enas_macro
                    scores each candidate under the shared weights
``proxy:NAME,...``  a zero-cost proxy of the initialised network             nb201, enas_macro
                    (synflow, grad_norm, snip, jacob_cov, naswot)
``tabular:PATH``    a NAS-Bench-201 table lookup (``tabular`` alone reads    nb201
                    ``$NASJAX_NB201_TABLE``)
==================  =====================================================  ==========================

Each estimator has one settings object, an ``ml_collections.ConfigDict`` from :func:`estimator_config`;
its keys are what a user may change (the CLI turns every key into an option). :func:`check_combination`
refuses, with one line saying what is accepted, every combination that cannot work (a space the estimator
cannot evaluate, a multi-fidelity strategy with an estimator that has one fidelity level, ``vmap`` on an
estimator that trains in a host loop, Ray on a stateful one) before anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nasjax.errors import NasjaxError
from nasjax.estimators.train import Model, TrainingEstimator, cell_network_model
from nasjax.estimators.train import check_robustness as check_robustness_settings
from nasjax.nn.count import count_params
from nasjax.training.model import plain_model_fn

KINDS = ("train", "early_stopping", "morphism", "weight_sharing", "proxy", "tabular")
TABLE_ENV = "NASJAX_NB201_TABLE"
_ALIASES = {"early-stopping": "early_stopping", "earlystopping": "early_stopping",
            "weight-sharing": "weight_sharing", "ws": "weight_sharing", "one_shot": "weight_sharing",
            "zero_cost": "proxy", "nb201": "tabular", "table": "tabular"}
# Families of spaces, told apart by what the space object offers (not by name, so custom spaces work).
CELL, NB201, ENAS_MACRO, CHAIN, OTHER = "cell", "nb201", "enas_macro", "chain", "other"
_FAMILY_SPACES = {CELL: "darts, nasnet, enas_micro", NB201: "nb201", ENAS_MACRO: "enas_macro",
                  CHAIN: "macro, nas_rl"}
SUPPORTED: dict[str, tuple[str, ...]] = {
    "train": (CELL, NB201, ENAS_MACRO, CHAIN),
    "early_stopping": (CELL, NB201, CHAIN),
    "morphism": (CHAIN,),
    "weight_sharing": (CELL, NB201, ENAS_MACRO),
    "proxy": (NB201, ENAS_MACRO),
    "tabular": (NB201,),
}
JITTABLE = {"train": False, "early_stopping": False, "morphism": False, "weight_sharing": True,
            "proxy": True, "tabular": True}
# Estimators whose result depends on the calls before them: a Ray worker would not see that state.
STATEFUL = ("early_stopping", "morphism")
FITNESS_KEYS = {"proxy": "score"}
# SPOS settings of its own ranking after training, which the weight-sharing estimator replaces by the search.
_SPOS_RANKING_KEYS = ("rank_samples", "rank_strategy", "rank_strategy_options")
SPEC_SYNTAX = ("train, early_stopping, morphism, weight_sharing, proxy:NAME[,NAME] (NAME: {proxies}), "
               "tabular:PATH (an NB201 table CSV; tabular alone reads ${env})")


def _proxy_names() -> tuple[str, ...]:
  from nasjax.estimators.proxies import PROXIES
  return tuple(PROXIES)


def accepted_specs() -> str:
  """The accepted spec forms, for messages."""
  return SPEC_SYNTAX.format(proxies=", ".join(_proxy_names()), env=TABLE_ENV)


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
  """A parsed spec: ``kind`` (one of :data:`KINDS`), the proxy ``names`` or the table ``path``."""
  kind: str
  names: tuple[str, ...] = ()
  path: str | None = None

  def __str__(self) -> str:
    if self.kind == "proxy":
      return "proxy:" + ",".join(self.names)
    if self.kind == "tabular" and self.path:
      return "tabular:" + self.path
    return self.kind

  @property
  def jittable(self) -> bool:
    return JITTABLE[self.kind]

  @property
  def fitness_key(self) -> str:
    """The metric a search maximises for this estimator."""
    return FITNESS_KEYS.get(self.kind, "accuracy")


def parse_spec(spec: Any) -> EstimatorSpec:
  """``"train"``, ``"proxy:synflow,naswot"``, ``"tabular:PATH"``, ... -> :class:`EstimatorSpec`."""
  if isinstance(spec, EstimatorSpec):
    return spec
  if not isinstance(spec, str) or not spec.strip():
    raise NasjaxError(f"an estimator spec (string) is required; accepted: {accepted_specs()}")
  head, sep, arg = spec.strip().partition(":")
  kind = head.strip().lower()
  kind = _ALIASES.get(kind, kind.replace("-", "_"))
  if kind not in KINDS:
    raise NasjaxError(f"unknown estimator {spec!r}; accepted: {accepted_specs()}")
  arg = arg.strip()
  if kind == "proxy":
    names = tuple(n.strip().lower().replace("-", "_") for n in arg.split(",") if n.strip())
    proxies = _proxy_names()
    unknown = [n for n in names if n not in proxies]
    if not names or unknown:
      what = f"unknown zero-cost proxy {', '.join(unknown)!r}" if unknown else "proxy needs a proxy name"
      raise NasjaxError(f"{what}; write proxy:NAME[,NAME] with NAME among {', '.join(proxies)}")
    if len(set(names)) != len(names):
      raise NasjaxError(f"proxy names repeat in {spec!r}; name each proxy once")
    return EstimatorSpec("proxy", names=names)
  if kind == "tabular":
    path = arg or os.environ.get(TABLE_ENV, "")
    if not path:
      raise NasjaxError(f"tabular needs the NB201 table: write tabular:PATH (the CSV described in "
                        f"nasjax.estimators.tabular) or set ${TABLE_ENV}")
    return EstimatorSpec("tabular", path=path)
  if sep:
    raise NasjaxError(f"estimator {kind!r} takes no ':' argument (got {spec!r}); accepted: {accepted_specs()}")
  return EstimatorSpec(kind)


# ---------------------------------------------------------------------------------------------- spaces
def space_family(space: Any) -> str:
  """``cell`` (DARTS-like cell spaces with a supernet), ``nb201``, ``enas_macro``, ``chain`` (macro, NAS-RL)
  or ``other``."""
  from nasjax.spaces.enas_macro import EnasMacroSpace
  from nasjax.spaces.macro import MacroSpace
  from nasjax.spaces.nb201 import NB201Space
  if isinstance(space, NB201Space):
    return NB201
  if isinstance(space, EnasMacroSpace):
    return ENAS_MACRO
  if isinstance(space, MacroSpace):
    return CHAIN
  if hasattr(space, "edge_ops") and hasattr(space, "decode") and hasattr(space, "supernet_ops"):
    return CELL
  return OTHER


def supports(kind: str, space: Any) -> bool:
  """Whether estimator ``kind`` evaluates architectures of ``space``."""
  family = space_family(space)
  if family in SUPPORTED[kind]:
    return True
  if kind == "weight_sharing" and family != OTHER:
    # Any space whose supernet the one-shot code can train with SPOS (NB201 once it has one).
    from nasjax.oneshot.spos import spos
    try:
      spos(space)
    except NasjaxError:
      return False
    return True
  return False


def estimators_for(space: Any) -> tuple[str, ...]:
  """The estimator kinds that can evaluate architectures of ``space``."""
  return tuple(k for k in KINDS if supports(k, space))


def _spaces_of(kind: str) -> str:
  return ", ".join(_FAMILY_SPACES[f] for f in SUPPORTED[kind])


def _space_name(space: Any) -> str:
  return getattr(space, "name", type(space).__name__)


def fidelity_kinds() -> str:
  return "train (levels are epochs) or tabular with the 12-epoch supplement (--supplement FILE)"


def check_combination(spec: Any, space: Any, *, strategy: Any = None, executor: Any = None) -> EstimatorSpec:
  """Refuses a combination that cannot work, with one line naming what is accepted.

  Checks that the estimator evaluates ``space``, that a multi-fidelity ``strategy`` (a Strategy or its
  ``num_fidelities``) meets an estimator with fidelity levels, and that ``executor`` (a name) can run it.
  Returns the parsed spec.
  """
  spec = parse_spec(spec)
  name = _space_name(space)
  if not supports(spec.kind, space):
    usable = estimators_for(space)
    if usable:
      also = f"; for {name} use: {', '.join(_spec_examples(usable))}"
    else:
      also = f"; no estimator evaluates {name} architectures yet (nasjax builds no network for that space)"
    raise NasjaxError(f"estimator {spec.kind} does not work on space {name!r}: it accepts the spaces "
                      f"{_spaces_of(spec.kind)}{also}")
  num_levels = strategy if isinstance(strategy, int) else getattr(strategy, "num_fidelities", 1)
  if num_levels > 1 and spec.kind not in ("train", "tabular"):
    strategy_name = getattr(strategy, "name", "this strategy")
    raise NasjaxError(f"strategy {strategy_name} is multi-fidelity and needs an estimator with fidelity "
                      f"levels: {fidelity_kinds()}; {spec.kind} has one level")
  if executor is not None and not isinstance(executor, str):
    return spec  # an executor object: the caller's business
  if executor == "vmap" and not spec.jittable:
    raise NasjaxError(f"executor vmap needs a jittable estimator (weight_sharing, proxy, tabular); {spec.kind} "
                      "trains in a host loop: use executor auto, serial or ray")
  if executor == "ray" and spec.kind in STATEFUL:
    raise NasjaxError(f"executor ray cannot run {spec.kind}: it is stateful (each result depends on the ones "
                      "before it, which a Ray worker does not see); use executor auto or serial")
  return spec


def _spec_examples(kinds) -> list[str]:
  examples = {"proxy": "proxy:synflow", "tabular": "tabular:PATH"}
  return [examples.get(k, k) for k in kinds]


# ---------------------------------------------------------------------------------------------- configs
def estimator_config(spec: Any, space: Any, *, preset: str = "demo") -> ml_collections.ConfigDict:
  """The settings of ``spec`` on ``space``: every key is meaningful for that estimator and settable.

  ``preset`` matters for ``weight_sharing`` only: ``"demo"`` (a minutes-long CPU supernet training) or
  ``"paper"`` (SPOS on the DARTS CIFAR-10 search setting).
  """
  spec = check_combination(spec, space)
  family = space_family(space)
  if spec.kind in ("train", "early_stopping"):
    from nasjax.estimators.train import short_training_config
    cfg = short_training_config()
    if family == NB201:
      del cfg["layers"]
      cfg.cells_per_stage = 1  # the benchmark's network has 5 per stage; one keeps a CPU search short
    elif family == CHAIN:
      del cfg["layers"], cfg["channels"]  # the architecture fixes every layer's width
    elif family == ENAS_MACRO:
      del cfg["layers"]  # the space fixes the layer count
    if spec.kind == "early_stopping":
      # Stop a run once P(final accuracy > best so far) < threshold, checked from min_epochs on
      # (0: the curve model's default, max(5, epochs // 10)).
      cfg.update(epochs=8, threshold=0.05, min_epochs=0, check_every=1)
    return cfg
  if spec.kind == "morphism":
    from nasjax.estimators.morphism import morphism_training_config
    cfg = morphism_training_config()
    del cfg["layers"], cfg["channels"]
    cfg.archive_size = 64
    return cfg
  if spec.kind == "weight_sharing":
    from nasjax import oneshot
    if family == ENAS_MACRO:
      from nasjax.estimators.enas_macro import shared_training_config
      return shared_training_config(preset)
    if preset not in ("demo", "paper"):
      raise NasjaxError(f"unknown preset {preset!r}; accepted: demo, paper")
    kind = "nb201" if family == NB201 else "darts"  # NB201's supernet has cells_per_stage, not layers
    make = oneshot.demo_search_config if preset == "demo" else oneshot.search_config
    cfg = make("spos", space=kind)
    cfg.space = _space_name(space)
    # The discrete strategy (--strategy) ranks the candidates, not SPOS's own ranking.
    for key in _SPOS_RANKING_KEYS:
      if key in cfg:
        del cfg[key]
    return cfg
  if spec.kind == "proxy":
    if family == ENAS_MACRO:
      from nasjax.estimators.enas_macro import proxy_config
      return proxy_config()
    # The network the proxies score: NAS-Bench-201's (16 channels, 5 cells per stage) on one batch.
    return ml_collections.ConfigDict(dict(batch_size=64, channels=16, cells_per_stage=5, seed=0))
  # tabular
  return ml_collections.ConfigDict(dict(fitness="c10valid_valid_acc", seed_noise=False, supplement="", seed=0))


def uses_workdir(spec: Any) -> bool:
  """Whether :func:`build_estimator` writes to or reads from the search's directory (a supernet's
  checkpoints, a morphism archive, the log an early-stopping estimator resumes from)."""
  return parse_spec(spec).kind in ("weight_sharing", "morphism", "early_stopping")


def needs_data(spec: Any) -> bool:
  """Whether building the estimator reads the image data (a table lookup does not)."""
  return parse_spec(spec).kind != "tabular"


# ---------------------------------------------------------------------------------------------- fidelity
def geometric_epochs(epochs: int, eta: int = 3) -> tuple[int, ...]:
  """Epoch counts ``round(epochs / eta**k)`` (at least 1), distinct and increasing, up to ``epochs``:
  ``(1, 3, 9)`` for 9 epochs and eta 3, ``(1, 2)`` for 2."""
  if int(epochs) < 1:
    raise NasjaxError(f"epochs must be positive, got {epochs!r}")
  levels = {int(epochs)}
  k = 1
  while epochs / eta ** (k - 1) > 1:
    levels.add(max(1, int(round(epochs / eta ** k))))
    k += 1
  return tuple(sorted(levels))


def fidelity_resources(spec: Any, cfg, *, eta: int = 3, resources: Any = None) -> tuple[float, ...]:
  """The resource of each fidelity level the estimator offers, lowest first (the strategy's
  ``resources``): epochs for ``train`` (geometric up to ``cfg.epochs``, or the integers given), the
  table's (12, 200) epochs for ``tabular`` with its supplement. Refuses estimators without levels."""
  spec = parse_spec(spec)
  if spec.kind == "train":
    if resources is not None:
      epochs = _epoch_levels(resources)
    else:
      epochs = geometric_epochs(int(cfg.epochs), int(eta))
      if len(epochs) < 2:
        raise NasjaxError(f"a multi-fidelity strategy needs at least 2 fidelity levels; with epochs="
                          f"{cfg.epochs} the train estimator has one: set --epochs 2 or more (the levels are "
                          f"epochs / eta**k, e.g. --epochs {eta ** 2} gives {geometric_epochs(eta ** 2, eta)}) "
                          "or give --strategy-option resources=[E1,E2,...]")
    return tuple(float(e) for e in epochs)
  if spec.kind == "tabular":
    from nasjax.estimators.tabular import FULL_EPOCHS, LOW_EPOCHS
    if not cfg.supplement:
      raise NasjaxError("tabular has one fidelity level (200 epochs) unless --supplement FILE gives the "
                        "12-epoch supplement; a multi-fidelity strategy needs it")
    levels = (float(LOW_EPOCHS), float(FULL_EPOCHS))
    if resources is not None and len(tuple(resources)) != len(levels):
      raise NasjaxError(f"tabular has the fidelity levels {levels} (epochs); resources must have "
                        f"{len(levels)} entries, got {list(resources)!r}")
    return tuple(float(r) for r in resources) if resources is not None else levels
  raise NasjaxError(f"estimator {spec.kind} has one fidelity level; a multi-fidelity strategy needs "
                    f"{fidelity_kinds()}")


def _epoch_levels(resources: Any) -> tuple[int, ...]:
  try:
    values = [float(r) for r in resources]
  except (TypeError, ValueError):
    values = []
  if (not values or any(not math.isfinite(v) or v < 1 or v != int(v) for v in values)
      or any(b <= a for a, b in zip(values, values[1:]))):
    raise NasjaxError(f"with the train estimator, resources are epoch counts: increasing integers >= 1, "
                      f"e.g. [1,3,9]; got {resources!r}")
  return tuple(int(v) for v in values)


# ---------------------------------------------------------------------------------------------- build
def build_estimator(spec: Any, space: Any, dataset: Any, cfg, *, num_candidates: int | None = None,
                    fidelity_resources: tuple[float, ...] | None = None, workdir: str | None = None,
                    show_progress: bool = False, mesh=None, robustness: dict | None = None):
  """The estimator of ``spec`` over ``space`` (see the module docstring), ready for ``search.run``.

  Args:
    spec: a spec string or :class:`EstimatorSpec`.
    space: a search space; ``dataset``: a :class:`nasjax.data.Dataset` (None for ``tabular``).
    cfg: the estimator's settings (:func:`estimator_config`, possibly changed).
    num_candidates: how many evaluations the search will ask (a training estimator picks its fastest
      program with it).
    fidelity_resources: the resource of each fidelity level when a multi-fidelity strategy drives the
      search (:func:`fidelity_resources`); None for one level.
    workdir: the search's directory. ``weight_sharing`` trains (and checkpoints) its supernet in
      ``workdir/supernet``; ``early_stopping`` and ``morphism`` restore the state a resumed search needs.
    show_progress, mesh: progress bars, and the device mesh of training estimators.
    robustness: ``train`` only: also measure each trained candidate's accuracy under corruptions and
      FGSM / PGD (:class:`nasjax.estimators.train.TrainingEstimator`'s ``robustness``; ``{}``: defaults).
  """
  spec = check_combination(spec, space, strategy=len(fidelity_resources) if fidelity_resources else 1)
  check_robustness(spec, robustness)
  if spec.kind != "tabular" and dataset is None:
    raise NasjaxError(f"estimator {spec.kind} needs a data set")
  family = space_family(space)
  if spec.kind == "train":
    epochs = tuple(int(r) for r in fidelity_resources) if fidelity_resources else None
    if epochs is not None:
      _epoch_levels(epochs)
    if family == CELL:
      return _short_training(space, dataset, cfg, mesh, show_progress, num_candidates, epochs, robustness)
    return TrainingEstimator(_network_builder(space, dataset, cfg, shared=True), dataset, cfg,
                             mesh=mesh, fidelity_epochs=epochs, robustness=robustness)
  if spec.kind == "early_stopping":
    return _early_stopping(space, dataset, cfg, mesh, workdir, num_candidates)
  if spec.kind == "morphism":
    return _morphism(space, dataset, cfg, mesh, workdir)
  if spec.kind == "weight_sharing":
    if family == ENAS_MACRO:
      from nasjax.estimators import enas_macro
      return enas_macro.weight_sharing(space, dataset, cfg, workdir=workdir, mesh=mesh, show_progress=show_progress)
    return _weight_sharing(space, dataset, cfg, workdir, show_progress, mesh)
  if spec.kind == "proxy":
    return _proxy(spec, space, dataset, cfg)
  return _tabular(spec, cfg, fidelity_resources)


def check_robustness(spec: Any, robustness: dict | None) -> dict | None:
  """The robustness settings completed with their defaults, refused (one line) for an estimator that keeps
  no trained network to attack; nothing is built or read."""
  if robustness is None:
    return None
  spec = parse_spec(spec)
  if spec.kind != "train":
    raise NasjaxError(f"robustness metrics attack each trained candidate: they need the train estimator, and "
                      f"estimator {spec.kind} keeps no trained network of its own")
  return check_robustness_settings(robustness)


def _short_training(space, dataset, cfg, mesh, show_progress, num_candidates, epochs, robustness=None):
  from nasjax.estimators.train import ShortTrainingEstimator
  # model="auto": the estimator compiles once or per candidate, whichever is faster for this many.
  return ShortTrainingEstimator(space, dataset, cfg, mesh=mesh, show_progress=show_progress, model="auto",
                                num_candidates=num_candidates, fidelity_epochs=epochs, robustness=robustness)


def _network_builder(space, dataset, cfg, *, shared: bool) -> Callable[[np.ndarray], Model]:
  """``arch -> Model`` for ``space``. ``shared``: one program for every candidate where the space has a
  network that takes the architecture as an array (NB201's switch network); else each its own. The ENAS
  macro space has only such a network."""
  family = space_family(space)
  if family == ENAS_MACRO:
    from nasjax.estimators.enas_macro import training_builder
    return training_builder(space, dataset, cfg)
  sample = jnp.zeros((2,) + tuple(dataset.input_shape), jnp.float32)
  if family == NB201:
    from nasjax.nn.nb201_network import NB201Network
    if shared:
      net = NB201Network(cfg.channels, cfg.cells_per_stage, dataset.num_classes)
      model_fn = plain_model_fn(net, takes_arch=True)
      zero_arch = jnp.zeros(6, jnp.int32)

      def init_switch(key):
        return net.init(key, sample, zero_arch, train=False)

      return lambda arch: Model(init_switch, model_fn, jnp.asarray(arch, jnp.int32),
                                int(net.count_params_for(arch, in_channels=sample.shape[-1])), shared=True)

    def nb201_model(arch):
      standalone = NB201Network(cfg.channels, cfg.cells_per_stage, dataset.num_classes,
                                genotype=tuple(int(v) for v in arch))
      return Model(lambda key: standalone.init(key, sample, train=False), plain_model_fn(standalone), None,
                   int(standalone.count_params_for(arch, in_channels=sample.shape[-1])))
    return nb201_model
  if family == CHAIN:
    from nasjax.nn.chain_network import chain_model_fn, chain_network, init_variables

    def chain_model(arch):
      network = chain_network(space, arch, dataset.num_classes, dataset.input_shape)
      shapes = jax.eval_shape(lambda k: init_variables(network, k), jax.random.key(0))
      return Model(lambda key: init_variables(network, key), chain_model_fn(network), None,
                   count_params(shapes["params"]))
    return chain_model
  if family == CELL:
    return lambda arch: cell_network_model(space, arch, cfg, dataset)
  raise NasjaxError(f"nasjax builds no network for space {_space_name(space)!r}")


def _early_stopping(space, dataset, cfg, mesh, workdir, num_candidates=None):
  from nasjax.estimators.curves import EarlyStoppingEstimator, make_epoch_fn
  from nasjax.training import init_key
  from nasjax.utils.jit import jit_with_options
  # The training engine's candidates and programs. A cell space takes the train estimator's choice: the
  # shared network (one compiled train and eval step for every run) when the search is long enough to
  # pay for it. NB201 candidates train as stand-alone networks: its switch network's step costs several
  # stand-alone steps on a CPU (many small conditionals), more than a compile saves over a run of epochs.
  trainer = (_short_training(space, dataset, cfg, mesh, False, num_candidates, None) if space_family(space) == CELL
             else TrainingEstimator(_network_builder(space, dataset, cfg, shared=False), dataset, cfg, mesh=mesh))
  x_tr, y_tr, x_va, y_va = trainer.data

  def make_run(arch, key):
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    model = trainer.builder(np.asarray(arch))
    # A shared model's init is one function for every candidate: JAX traces and compiles it once.
    variables = jit_with_options(model.init)(init_key(seed))
    run_cfg = cfg.copy_and_resolve_references()
    run_cfg.seed = seed
    return make_epoch_fn(model.model_fn, variables, run_cfg, x_tr, y_tr, x_va, y_va,
                         mean=dataset.mean, std=dataset.std, seed=seed, mesh=mesh, extra=model.extra,
                         programs=trainer.programs(model, run_cfg))

  estimator = EarlyStoppingEstimator(make_run, cfg.epochs, threshold=cfg.threshold,
                                     min_epochs=cfg.min_epochs or None, check_every=cfg.check_every)
  log = os.path.join(workdir, "evaluations.jsonl") if workdir else None
  if log and os.path.exists(log):
    estimator.restore(log)  # a resumed search continues from the best accuracy it had reached
  return estimator


class _SavedMorphism:
  """A MorphismEstimator whose archive of trained parents is saved after every evaluation and loaded on
  resume, so a resumed search warm-starts its children exactly as the uninterrupted one did."""
  jittable = False
  num_fidelities = 1
  name = "morphism"

  def __init__(self, estimator, path: str):
    self.estimator, self.path = estimator, path
    if os.path.exists(path):
      estimator.load(path)

  def __call__(self, arch, key) -> dict:
    metrics = self.estimator(arch, key)
    tmp = self.path + ".tmp"
    self.estimator.save(tmp)
    os.replace(tmp, self.path)
    return metrics


def _morphism(space, dataset, cfg, mesh, workdir):
  from nasjax.estimators.morphism import MorphismEstimator
  estimator = MorphismEstimator(space, dataset, cfg, mesh=mesh, archive_size=int(cfg.archive_size))
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    return _SavedMorphism(estimator, os.path.join(workdir, "morphism_archive.msgpack"))
  return estimator


def _weight_sharing(space, dataset, cfg, workdir, show_progress, mesh):
  """SPOS-trains the supernet of ``space`` (checkpointed in ``workdir/supernet``; a rerun resumes or
  reuses it), then returns the weight-sharing estimator over the trained variables."""
  from nasjax import data as nasdata
  from nasjax import oneshot
  from nasjax.estimators.weight_sharing import weight_sharing_estimator
  from nasjax.oneshot.search import cached_search
  from nasjax.parallel.distributed import to_host
  run_cfg = cfg.copy_and_resolve_references()
  run_cfg.method = "spos"
  run_cfg.rank_samples = 1  # run_search's own ranking, kept minimal: the discrete strategy does the real one
  run_cfg.rank_strategy = "random"
  result = oneshot.run_search(run_cfg, space, dataset, show_progress=show_progress, mesh=mesh,
                              workdir=os.path.join(workdir, "supernet") if workdir else None)
  # The split and the Search (with its supernet module) that run_search used, rebuilt from the settings.
  x, y = dataset.x_train, dataset.y_train
  if run_cfg.train_subset:
    x, y = nasdata.subset(x, y, run_cfg.train_subset, run_cfg.seed)
  xt, yt, xv, yv = nasdata.train_valid_split(x, y, run_cfg.valid_fraction, run_cfg.seed)
  steps = min(nasdata.Batcher(xt, yt, run_cfg.batch_size).steps_per_epoch,
              nasdata.Batcher(xv, yv, run_cfg.batch_size).steps_per_epoch)
  search = cached_search(run_cfg, space, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std,
                         steps, mesh)
  variables = to_host({"params": result["state"]["params"], "batch_stats": result["state"]["batch_stats"]})

  def batches(x, y):
    n = min(len(x), run_cfg.rank_batches * run_cfg.batch_size) // run_cfg.batch_size * run_cfg.batch_size
    if n == 0:
      raise NasjaxError(f"weight sharing needs at least one batch of {run_cfg.batch_size} images per split; "
                        f"got {len(x)}")
    images = nasdata.normalize(jnp.asarray(x[:n], jnp.float32), dataset.mean, dataset.std)
    return (images.reshape(n // run_cfg.batch_size, run_cfg.batch_size, *images.shape[1:]),
            jnp.asarray(y[:n], jnp.int32).reshape(n // run_cfg.batch_size, run_cfg.batch_size))

  return weight_sharing_estimator(space, search.net, variables, batches(xt, yt), batches(xv, yv))


def _proxy(spec, space, dataset, cfg):
  from nasjax import data as nasdata
  from nasjax.estimators.proxies import proxy_estimator
  if cfg.batch_size < 2:
    raise NasjaxError(f"batch_size must be at least 2 for a proxy's batch, got {cfg.batch_size}")
  x, y = nasdata.subset(dataset.x_train, dataset.y_train, min(cfg.batch_size, len(dataset.x_train)), cfg.seed)
  images = nasdata.normalize(jnp.asarray(x, jnp.float32), dataset.mean, dataset.std)
  sizes = {"cells_per_stage": cfg.cells_per_stage} if "cells_per_stage" in cfg else {}
  return proxy_estimator(space, spec.names, (images, jnp.asarray(y, jnp.int32)), channels=cfg.channels,
                         num_classes=dataset.num_classes, **sizes)


def _tabular(spec, cfg, fidelity_resources):
  from nasjax.estimators.tabular import NB201TabularEstimator, load_nb201_table
  table = load_nb201_table(spec.path, cfg.supplement or None)
  estimator = NB201TabularEstimator(table, cfg.fitness, seed_noise=bool(cfg.seed_noise),
                                    low_fidelity=bool(fidelity_resources))
  if fidelity_resources and len(fidelity_resources) != estimator.num_fidelities:
    raise NasjaxError(f"the table offers {estimator.num_fidelities} fidelity level(s); the strategy asks for "
                      f"{len(fidelity_resources)}")
  return estimator


def file_sha256(path: str) -> str:
  """The content hash a search identity records for a data file, so a resume finds the same table by
  any path and refuses another one."""
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
  except OSError as e:
    raise NasjaxError(f"cannot read {path}: {e.strerror or e}") from None
  return digest.hexdigest()


def identity(spec: Any, cfg) -> dict:
  """What of the estimator a resumed search must match: the spec, and the table's content for tabular."""
  spec = parse_spec(spec)
  out = {"estimator": spec.kind if spec.kind == "tabular" else str(spec)}
  if spec.kind == "tabular":
    out["table_sha256"] = file_sha256(spec.path) if os.path.isfile(spec.path) else None
    if cfg.supplement:
      out["supplement_sha256"] = file_sha256(cfg.supplement) if os.path.isfile(cfg.supplement) else None
  return out


__all__ = ["KINDS", "EstimatorSpec", "accepted_specs", "build_estimator",
           "check_combination", "estimator_config", "estimators_for", "fidelity_resources", "geometric_epochs",
           "identity", "needs_data", "parse_spec", "space_family", "supports", "uses_workdir"]
