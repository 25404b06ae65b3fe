"""The one-shot search loop: any :class:`~nasjax.oneshot.method.Method` on the one supernet.

One jitted step per batch pair (DARTS' alternation, Liu et al. 2019, Algorithm 1):

1. architecture step on a validation batch (first order, or second order through
   :func:`~nasjax.oneshot.hypergradient.architecture_gradient`), Adam with weight decay; skipped for
   methods without architecture parameters (SPOS) and during ``arch_warmup_epochs`` (PC-DARTS);
2. weight step on a training batch with the new architecture: SGD with momentum, cosine learning rate,
   weight decay and gradient clipping.

The step is a pure function of the search state (weights, BatchNorm statistics, architecture parameters,
both optimizer states, step, PRNG key) and the batches, so it runs data-parallel under ``jax.jit`` on a
device mesh (batches sharded, state replicated; BatchNorm sees the global batch, so N devices compute
the one-device step) and the whole state checkpoints to orbax with the data position: a resumed search
is bitwise the uninterrupted one on the same backend.

The loop around the step (checkpoints with exact resume and run identity, metrics log, NaN/Inf guard,
progress) is the training engine's (:func:`nasjax.training.run_loop`). Settings and the method registry are
in :mod:`.configs`, the rules against the skip-connection collapse in :mod:`.anti_collapse`.

SPOS on a cell space whose architectures the edge supernet cannot run as they are (NASNet, ENAS micro: a
node may read one input twice, the output concatenates the loose ends) trains
:class:`~nasjax.nn.cell_network.SharedCellNetwork` instead, on the sampled encodings themselves.

On :class:`~nasjax.spaces.NB201Space` the supernet is :class:`~nasjax.nn.nb201_network.NB201Network`
(BN without affine parameters in the ops, as the benchmark's search cells) with one cell type: the
architecture parameters, mixing weights and probabilities are ``{"normal": f32[6, 5]}`` and the derived
cell takes every edge's arg-max op.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
import numpy as np
import optax

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.estimators.weight_sharing import weight_sharing_estimator
from nasjax.nn.cell_network import SharedCellNetwork, edge_supernet_is_exact
from nasjax.nn.init import init_variables
from nasjax.nn.nb201_network import NB201Network
from nasjax.nn.ops import Impl
from nasjax.nn.supernet import Supernet
from nasjax.oneshot import cost as arch_cost
from nasjax.oneshot import derive
from nasjax.oneshot.anti_collapse import ANTI_COLLAPSE, _collapse_check, collapse_check, darts_minus  # noqa: F401
from nasjax.oneshot.configs import (METHODS, check_config, check_space, demo_search_config,  # noqa: F401
                                    make_method, search_config)
from nasjax.oneshot.hypergradient import (architecture_gradient, dominant_eigenvalue,
                                          hessian_vector_product)
from nasjax.oneshot.latency import LatencyTable
from nasjax.oneshot.method import CELL_TYPES
from nasjax.parallel.distributed import to_host
from nasjax.spaces.nb201 import NB201_OPS, NB201Space
from nasjax.training import (EpochEnd, Position, Run, check_batch_size, cosine_schedule, evaluate, init_key,
                             run_loop, sgd_optimizer)
from nasjax.utils.jit import jit_with_options


def uses_node_network(method: str, space) -> bool:
  """Whether ``method`` trains :class:`~nasjax.nn.cell_network.SharedCellNetwork` on ``space`` instead of the
  edge supernet: SPOS's sampled paths on a cell space the edge supernet cannot run exactly (NASNet, ENAS micro)."""
  return method == "spos" and not isinstance(space, NB201Space) and not edge_supernet_is_exact(space)


class Search:
  """Everything a one-shot search needs, built once: supernet, method, optimizers, jitted step."""

  def __init__(self, cfg, space, input_shape: tuple[int, int, int], num_classes: int, mean, std,
               steps_per_epoch: int, mesh=None):
    check_config(cfg)
    check_space(cfg, space)
    self.cfg, self.space = cfg, space
    self.method = make_method(cfg, space)
    self.nb201 = isinstance(space, NB201Space)
    self.node_paths = uses_node_network(self.method.name, space)
    # The edge supernet takes the method's hard flag (GDAS); the node-based network computes one op per slot.
    self.net_kwargs = {} if self.node_paths else {"hard": self.method.hard}
    if self.nb201:
      self.ops, self.cells = NB201_OPS, ("normal",)
      self.net = NB201Network(channels=cfg.channels, cells_per_stage=int(cfg.get("cells_per_stage", 5)),
                              num_classes=num_classes, affine=False)
    elif self.node_paths:
      self.ops, self.cells = tuple(space.supernet_ops), CELL_TYPES
      self.net = SharedCellNetwork.for_space(space, channels=cfg.channels, layers=cfg.layers,
                                             num_classes=num_classes, stem_multiplier=cfg.stem_multiplier,
                                             affine=False, impl=Impl(depthwise=cfg.dw_impl),
                                             remat_edges=cfg.remat_edges)
    else:
      self.ops, self.cells = tuple(space.supernet_ops), CELL_TYPES
      self.net = Supernet.for_space(space, channels=cfg.channels, layers=cfg.layers, num_classes=num_classes,
                                    stem_multiplier=cfg.stem_multiplier, impl=Impl(depthwise=cfg.dw_impl),
                                    partial_channels=self.method.partial_channels, edge_loop=cfg.edge_loop,
                                    remat_edges=cfg.remat_edges)
    self.input_shape, self.mean, self.std = input_shape, mean, std
    self.mesh = mesh or nasdata.data_mesh()
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = cfg.epochs * steps_per_epoch
    self.schedule = cosine_schedule(cfg, self.total_steps)
    # On one flat vector: the per-leaf optimizer over a supernet's parameter leaves was ~900 small fused
    # loops of the step's program, a noticeable part of XLA's compile time.
    self.weight_tx = sgd_optimizer(cfg, self.schedule, flat=True)
    self.arch_tx = optax.chain(optax.add_decayed_weights(cfg.arch_weight_decay),
                               optax.adam(cfg.arch_learning_rate, b1=cfg.arch_beta1, b2=cfg.arch_beta2))
    self.skip_index = self.ops.index("skip_connect") if "skip_connect" in self.ops else None
    # Resource-aware search: the expected edge cost (above cost_target, if set), in units of a uniform
    # distribution's, weighs cost_weight in the architecture objective (nasjax.oneshot.cost).
    self.cost_tables = None
    if cfg.cost_weight:
      op_cost_fn = None
      if cfg.cost_metric == "latency":
        table = LatencyTable(cfg.get("latency_table") or None, batch=int(cfg.latency_batch),
                             runs=int(cfg.latency_runs), warmup=int(cfg.latency_warmup))
        op_cost_fn = table.op_ms
      self.cost_tables = arch_cost.edge_cost_tables(space.supernet_ops, space.num_nodes, cfg.channels,
                                                    cfg.layers, input_shape, cfg.cost_metric, op_cost_fn)
      if cfg.cost_metric == "latency":
        table.save()
      scale = arch_cost.uniform_cost(self.cost_tables)
      if scale <= 0:
        raise NasjaxError(f"every op of this space costs 0 {cfg.cost_metric}; cost_weight has nothing to weigh")
      self._scaled_tables = {k: jnp.asarray(v / scale, jnp.float32) for k, v in self.cost_tables.items()}
      self._scaled_target = float(cfg.get("cost_target", 0.0)) / scale
    self.step = jit_with_options(self._step, donate_argnums=(0,))
    self.eval_step = jit_with_options(self._eval_step)

  # ------------------------------------------------------------------------------------------ state
  def init_state(self, seed: int | None = None) -> dict:
    seed = self.cfg.seed if seed is None else seed
    arch_key, probe_key, loop_key = jax.random.split(jax.random.key(seed), 3)
    x = jnp.zeros((2,) + tuple(self.input_shape), jnp.float32)
    if self.nb201:
      arch = self.method.init_arch(arch_key, len(self.space.edges), len(self.ops), cells=self.cells)
    else:
      arch = self.method.init_arch(arch_key, self.space.num_edges, len(self.ops))
    # Only the shapes of the mixing weights matter for building the variables.
    probe = self.net_arch(self.method.mix(arch, probe_key, 0.0))
    variables = init_variables(self.net, init_key(seed), x, probe, train=False, **self.net_kwargs)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}), "arch": arch,
            "weight_opt": self.weight_tx.init(variables["params"]), "arch_opt": self.arch_tx.init(arch),
            "step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(loop_key)}

  # ------------------------------------------------------------------------------------------ losses
  def net_arch(self, weights):
    """The supernet's architecture argument: the mixing weights dict, NB201's one cell type alone, or the
    space's encoding (normal then reduce) for the node-based network."""
    if self.node_paths:
      return jnp.concatenate([weights[c] for c in CELL_TYPES])
    return weights["normal"] if self.nb201 else weights

  def weights(self, arch, key, step):
    """Mixing weights of the supernet at ``step``, with DARTS-'s decaying auxiliary skip if enabled."""
    progress_ = jnp.minimum(step / max(1, self.total_steps), 1.0)
    mixed = self.method.mix(arch, key, progress_)
    if (self.cfg.anti_collapse == "darts_minus" and self.skip_index is not None and self.method.bilevel
        and not self.method.hard):
      mixed = darts_minus(mixed, self.skip_index, progress_)
    return mixed

  def loss(self, params, batch_stats, weights, x, y):
    logits, updates = self.net.apply({"params": params, "batch_stats": batch_stats}, x, self.net_arch(weights),
                                     train=True, mutable=["batch_stats"], **self.net_kwargs)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, (updates["batch_stats"], logits)

  def cost_penalty(self, arch):
    """``cost_weight`` x the expected edge cost (its excess over ``cost_target`` when one is set), both relative
    to a uniform distribution's expected cost; 0 when off."""
    if self.cost_tables is None:
      return 0.0
    return self.cfg.cost_weight * arch_cost.budget_penalty(self.method.probabilities(arch), self._scaled_tables,
                                                           self._scaled_target)

  def arch_losses(self, state, xt, yt, xv, yv, key):
    """``(train_loss(params, arch), valid_loss(params, arch))`` closures of one step (same noise in both)."""
    step = state["step"]

    def train_loss(params, arch):
      return self.loss(params, state["batch_stats"], self.weights(arch, key, step), xt, yt)[0]

    def valid_loss(params, arch):
      value = self.loss(params, state["batch_stats"], self.weights(arch, key, step), xv, yv)[0]
      if self.method.regularizer is not None:
        value = value + self.method.regularizer(arch)
      return value + self.cost_penalty(arch)
    return train_loss, valid_loss

  # ------------------------------------------------------------------------------------------ step
  def _augment(self, key, x):
    return nasdata.augment_batch(key, x, crop_padding=self.cfg.crop_padding, flip=self.cfg.flip,
                                 cutout_size=0, mean=self.mean, std=self.std)

  def _step(self, state, xt, yt, xv, yv):
    cfg = self.cfg
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    k_aug_t, k_aug_v, k_arch, k_weights = jax.random.split(key, 4)
    xt, xv = self._augment(k_aug_t, xt), self._augment(k_aug_v, xv)
    metrics = {}
    arch, arch_opt = state["arch"], state["arch_opt"]
    active = state["step"] >= cfg.arch_warmup_epochs * self.steps_per_epoch
    if self.method.single_level:
      # SNAS: weights and architecture descend the same training loss, both gradients from one backward
      # pass; warm-up epochs compute the architecture gradient but do not apply it.
      def joint_loss(params, arch):
        loss, (batch_stats, logits) = self.loss(params, state["batch_stats"],
                                                self.weights(arch, k_weights, state["step"]), xt, yt)
        return loss + self.cost_penalty(arch), (batch_stats, logits, loss)

      (_, (batch_stats, logits, loss)), (grads, arch_grad) = jax.value_and_grad(
          joint_loss, (0, 1), has_aux=True)(state["params"], arch)

      def arch_update(arch, arch_opt):
        updates, new_arch_opt = self.arch_tx.update(arch_grad, arch_opt, arch)
        return optax.apply_updates(arch, updates), new_arch_opt

      arch, arch_opt = lax.cond(active, arch_update, lambda a, o: (a, o), arch, arch_opt)
      return self._finish_step(state, grads, loss, batch_stats, logits, yt, arch, arch_opt, metrics)
    if self.method.bilevel:
      def arch_update(arch, arch_opt):
        train_loss, valid_loss = self.arch_losses(state, xt, yt, xv, yv, k_arch)
        # The optimizer keeps its momentum as one flat vector; the virtual step wants the parameter tree.
        momentum_buffer = ravel_pytree(state["params"])[1](
            optax.tree_utils.tree_get(state["weight_opt"], "trace"))
        valid_value, arch_grad = architecture_gradient(
            train_loss, valid_loss, state["params"], arch, order=cfg.order, hessian=cfg.hessian,
            xi=self.schedule(state["step"]), momentum_buffer=momentum_buffer, momentum=cfg.momentum,
            weight_decay=cfg.weight_decay)
        updates, new_arch_opt = self.arch_tx.update(arch_grad, arch_opt, arch)
        return optax.apply_updates(arch, updates), new_arch_opt, valid_value

      def warm_up(arch, arch_opt):
        # Weights only: the architecture gradient is not computed at all (half of a first-order step).
        # A zero validation loss is what the epoch record leaves out.
        return arch, arch_opt, jnp.zeros((), jnp.result_type(*jax.tree.leaves(state["params"])))

      arch, arch_opt, metrics["valid_loss"] = lax.cond(active, arch_update, warm_up, arch, arch_opt)
    weights = self.weights(arch, k_weights, state["step"])
    (loss, (batch_stats, logits)), grads = jax.value_and_grad(self.loss, has_aux=True)(
        state["params"], state["batch_stats"], weights, xt, yt)
    return self._finish_step(state, grads, loss, batch_stats, logits, yt, arch, arch_opt, metrics)

  def _finish_step(self, state, grads, loss, batch_stats, logits, yt, arch, arch_opt, metrics):
    """The weight update and the step's new state, shared by the bilevel and single-level steps."""
    updates, weight_opt = self.weight_tx.update(grads, state["weight_opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics.update(loss=loss, accuracy=jnp.mean(jnp.argmax(logits, -1) == yt))
    new_state = dict(state, params=params, batch_stats=batch_stats, arch=arch, weight_opt=weight_opt,
                     arch_opt=arch_opt, step=state["step"] + 1)
    return new_state, metrics

  def _eval_step(self, state, x, y, mask):
    x = nasdata.normalize(x, self.mean, self.std)
    weights = self.weights(state["arch"], jax.random.key(0), state["step"])
    logits = self.net.apply({"params": state["params"], "batch_stats": state["batch_stats"]}, x,
                            self.net_arch(weights), train=False, **self.net_kwargs)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = jnp.argmax(logits, -1) == y
    return jnp.sum(losses * mask), jnp.sum(correct * mask), jnp.sum(mask)

  # ------------------------------------------------------------------------------------------ views
  def probabilities(self, arch) -> dict:
    return {c: np.asarray(v) for c, v in self.method.probabilities(arch).items()}

  def derive(self, arch) -> np.ndarray:
    strength = self.method.edge_strength(arch) if self.method.edge_strength is not None else None
    return derive.derive_arch(self.space, self.probabilities(arch), strength)

  def eigenvalue(self, state, xv, yv, key, iterations: int) -> float:
    """Dominant eigenvalue of the Hessian of the validation loss w.r.t. the architecture parameters."""
    if not hasattr(self, "_hvp"):
      def hvp(state, xv, yv, vector):
        weights_key = jax.random.key(1)

        def loss(arch):
          return self.loss(state["params"], state["batch_stats"], self.weights(arch, weights_key, state["step"]),
                           nasdata.normalize(xv, self.mean, self.std), yv)[0]
        return hessian_vector_product(loss, state["arch"], vector)
      self._hvp = jit_with_options(hvp)
    return dominant_eigenvalue(lambda v: self._hvp(state, xv, yv, v), state["arch"], key, iterations)


_SEARCHES: dict = {}


def cached_search(cfg, space, input_shape, num_classes, mean, std, steps_per_epoch, mesh=None) -> Search:
  """A :class:`Search` reused for identical settings in one process, so its compiled steps are too
  (a resumed run or a second seed in a notebook does not recompile). The seed is not part of the key:
  it only enters the initial state."""
  mesh = mesh or nasdata.data_mesh()
  settings = {k: v for k, v in (cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)).items() if k != "seed"}
  key = (repr(sorted(settings.items())), space, tuple(input_shape), num_classes, tuple(mean), tuple(std),
         steps_per_epoch, tuple(d.id for d in mesh.devices.flat))
  if key not in _SEARCHES:
    if len(_SEARCHES) >= 4:
      _SEARCHES.pop(next(iter(_SEARCHES)))
    _SEARCHES[key] = Search(cfg, space, input_shape, num_classes, mean, std, steps_per_epoch, mesh)
  return _SEARCHES[key]


def _record_arch(search: Search, arch) -> dict:
  probs = search.probabilities(arch)
  derived = search.derive(arch)
  record = {"alphas": {c: np.round(probs[c], 5).tolist() for c in search.cells},
            "arch": [int(v) for v in derived], "genotype": search.space.to_string(derived),
            "normal_skips": derive.count_op(search.space, derived, "skip_connect")}
  if search.cost_tables is not None:
    metric = search.cfg.cost_metric
    record[f"expected_edge_{metric}"] = float(arch_cost.expected_cost(probs, search.cost_tables))
    record[f"derived_edge_{metric}"] = arch_cost.derived_cost(derived, search.space, search.cost_tables)
  return record


def run_search(cfg, space, dataset: nasdata.Dataset, *, workdir: str | None = None, identity: dict | None = None,
               show_progress: bool = True, stop_after_steps: int | None = None, mesh=None) -> dict:
  """Runs a one-shot search; returns the derived architecture, its genotype and the per-epoch history.

  With ``workdir``: ``checkpoints/`` (whole search state each epoch, and every ``checkpoint_every_steps``),
  ``metrics.jsonl`` (per-epoch alphas, genotypes, losses, accuracies, eigenvalues; TensorBoard scalars
  where a writer is installed). ``stop_after_steps`` ends the run after that many steps of this call, as a
  killed process would (for resume tests); the result then has ``"finished": False``. A loss that becomes
  NaN/Inf raises :class:`~nasjax.errors.DivergenceError` and keeps the last good checkpoint.
  """
  x, y = dataset.x_train, dataset.y_train
  if cfg.train_subset:
    x, y = nasdata.subset(x, y, cfg.train_subset, cfg.seed)
  xt, yt, xv, yv = nasdata.train_valid_split(x, y, cfg.valid_fraction, cfg.seed)
  train_batches = nasdata.Batcher(xt, yt.astype(np.int32), cfg.batch_size, seed=cfg.seed)
  valid_batches = nasdata.Batcher(xv, yv.astype(np.int32), cfg.batch_size, seed=cfg.seed + 1)
  steps_per_epoch = min(train_batches.steps_per_epoch, valid_batches.steps_per_epoch)
  # The data's content, not its name or path: a resume on a regenerated subset of the same name is refused.
  identity = dict(identity or {}, config=cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg),
                  space=space.name, dataset=dataset.fingerprint)
  if uses_node_network(cfg.method, space):
    # Checkpoints of the edge supernet that SPOS trained on these spaces before are another run.
    identity["shared_network"] = "SharedCellNetwork"
  run = None
  if workdir is not None:
    # Numbered by step: checkpoints inside an epoch carry its running sums, so a resumed epoch's means are exact.
    run = Run(workdir, identity, cfg.keep_checkpoints, steps_per_epoch=steps_per_epoch)
    run.check()  # a checkpoint of another search is refused before the search step compiles
  try:
    search = cached_search(cfg, space, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std,
                           steps_per_epoch, mesh)
    mesh = search.mesh
    check_batch_size(cfg.batch_size, mesh)
    state = search.init_state(cfg.seed)
    history: list[dict] = []
    start = Position()
    if run is not None:
      state, start, history = run.resume(state)
  except BaseException:
    if run is not None:  # every refused path closes the checkpoint manager: nothing prints at shutdown
      run.close()
    raise
  eigen_batch = next(valid_batches.epoch(0))
  t_start = time.perf_counter()

  def batches(epoch, start_step):
    pairs = zip(train_batches.epoch(epoch, start_step), valid_batches.epoch(epoch, start_step))
    return ((bx, by, vx, vy) for (bx, by), (vx, vy) in pairs)

  def end_epoch(state, info: EpochEnd, history):
    record: dict[str, Any] = {"epoch": info.epoch + 1, "seconds": info.seconds,
                              "learning_rate": float(search.schedule(info.epoch * steps_per_epoch))}
    if info.steady_s_per_step is not None:  # the epoch's first step holds any compilation
      record["steady_s_per_step"] = info.steady_s_per_step
    record.update({f"train_{k}" if k in ("loss", "accuracy") else k: v / max(1, info.steps)
                   for k, v in info.sums.items() if v or k != "valid_loss"})
    ev = evaluate(search.eval_step, state, xv, yv.astype(np.int32), cfg.eval_batch_size, mesh)
    record.update(valid_accuracy=ev["accuracy"], valid_eval_loss=ev["loss"])
    if search.method.bilevel:
      record.update(_record_arch(search, to_host(state["arch"])))
      if cfg.eigen_every and (info.epoch + 1) % cfg.eigen_every == 0:
        ex, ey = nasdata.shard_batch(eigen_batch, mesh)
        record["hessian_eigenvalue"] = search.eigenvalue(state, ex, ey, jax.random.key(info.epoch),
                                                         cfg.eigen_iters)
    reason, _ = collapse_check(cfg, history + [record])
    if reason:
      record["stopped"] = reason
    return record

  def diverged(metric, value, epoch, step):
    return (f"{metric.replace('_', ' ')} became {value} at epoch {epoch}, step {step} of the {cfg.method} "
            "search; nothing derived from it is written, and the last good checkpoint is kept"
            + (f" in {workdir}" if workdir else ""))

  try:
    out = run_loop(lambda state, batch, epoch: search.step(state, *batch), nasdata.replicate(state, mesh),
                   batches, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, end_epoch=end_epoch, mesh=mesh,
                   start=start, history=history, run=run,
                   initial_sums={"loss": 0.0, "accuracy": 0.0, "valid_loss": 0.0},
                   divergence_message=diverged, checkpoint_every_steps=cfg.checkpoint_every_steps,
                   stop_after_steps=stop_after_steps, desc=f"{cfg.method} epoch", show_progress=show_progress,
                   images_per_step=cfg.batch_size)
  finally:
    if run is not None:
      run.close()
  state, history = out.state, out.history
  if not out.finished:
    return out.interrupted()
  result = {"finished": True, "method": cfg.method, "space": space.name, "epochs_run": out.position.epoch,
            "seconds": time.perf_counter() - t_start, "history": history, "state": state,
            "stopped": out.stopped}
  if search.method.bilevel:
    kept_record = collapse_check(cfg, history)[1] if out.stopped else None
    final = kept_record or history[-1]
    result.update(arch=final["arch"], genotype=final["genotype"], alphas=final["alphas"],
                  derived_at_epoch=final["epoch"])
  else:
    ranking = rank_architectures(search, state, (xt, yt), (xv, yv), cfg)
    result.update(arch=ranking[0]["arch"], genotype=ranking[0]["genotype"], ranking=ranking)
  return result


def rank_architectures(search: Search, state, train_xy, valid_xy, cfg) -> list[dict]:
  """Searches the trained supernet's shared weights with a discrete strategy and ranks what it evaluated.

  SPOS (Guo et al., ECCV 2020) searches its trained supernet with evolution; random search with weight
  sharing (Li & Talwalkar, UAI 2019) samples uniformly. Either is ``cfg.rank_strategy`` (any registered
  strategy) driven by :func:`nasjax.search.run` for ``cfg.rank_samples`` evaluations over
  :func:`nasjax.estimators.weight_sharing.weight_sharing_estimator`: each candidate's BN statistics are
  recomputed on ``cfg.rank_batches`` training batches (running statistics mix all sampled paths and fit
  none), then it is evaluated on as many validation batches. The same batches serve every candidate, so
  their scores are comparable; the estimator is jittable, so each asked batch is one vmapped call.
  """
  from nasjax import search as driver
  from nasjax import strategies

  def batches(x, y):
    n = min(len(x), cfg.rank_batches * cfg.batch_size) // cfg.batch_size * cfg.batch_size
    if n == 0:
      raise NasjaxError(f"ranking needs at least one batch of {cfg.batch_size} images; got {len(x)}")
    images = nasdata.normalize(jnp.asarray(x[:n], jnp.float32), search.mean, search.std)
    return (images.reshape(n // cfg.batch_size, cfg.batch_size, *images.shape[1:]),
            jnp.asarray(y[:n], jnp.int32).reshape(n // cfg.batch_size, cfg.batch_size))

  variables = to_host({"params": state["params"], "batch_stats": state["batch_stats"]})
  estimate = weight_sharing_estimator(search.space, search.net, variables, batches(*train_xy),
                                      batches(*valid_xy))
  options = dict(cfg.rank_strategy_options) if cfg.get("rank_strategy_options") else {}
  if cfg.rank_strategy in ("regularized_evolution", "evolution") and "population_size" not in options:
    # A population of half the budget (at most SPOS's 50) leaves the other half for evolution.
    options["population_size"] = max(2, min(50, cfg.rank_samples // 2))
    options.setdefault("tournament_size", max(2, min(10, options["population_size"] // 2)))
  strategy = strategies.get_strategy(cfg.rank_strategy, search.space, **options)
  out = driver.run(strategy, estimate, int(cfg.rank_samples), jax.random.key(cfg.seed + 17),
                   show_progress=False, to_string=search.space.to_string, executor="auto")
  ranking = [{"arch": r["arch"], "genotype": r["genotype"], "accuracy": float(r["metrics"]["accuracy"]),
              "loss": float(r["metrics"]["loss"])} for r in out["history"] if not r["failed"]]
  ranking.sort(key=lambda r: -r["accuracy"])
  return ranking
