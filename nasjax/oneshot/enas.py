"""ENAS: an LSTM controller and one shared network, trained in alternation.

Pham, Guan, Zoph, Le & Dean, "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018. Each
epoch has two phases:

1. shared weights: one pass over the training split; every mini-batch trains the shared network on one
   architecture sampled from the controller (SGD with momentum, cosine learning rate, weight decay,
   gradient clipping; only the sampled ops run, so only their parameters move);
2. controller: ``controller_steps`` REINFORCE steps; each samples ``controller_batch`` architectures and
   rewards each with its accuracy on one validation mini-batch under the shared weights (BatchNorm in
   training mode, on the batch's own statistics, as the authors' code does). All samples of a step see the
   same mini-batch, so the baseline-corrected rewards compare architectures, not batches.

The step is one jitted function of the whole state (shared weights, their optimizer, the controller's
strategy state, the step, the key) and a batch whose ``phase`` flag picks the phase (``lax.cond``), so the
training engine's loop runs it like any step: checkpoints with exact resume, metrics log, NaN guard.

At the end the architecture is derived as in the paper: ``derive_samples`` architectures sampled from the
trained controller are evaluated with the shared weights on the same ``derive_batches`` validation batches
and the best is kept (retrain it with ``nasjax train --genotype DIR/result.json``).

Shared networks: :class:`~nasjax.nn.cell_network.SharedCellNetwork` for cell spaces (ENAS micro, DARTS,
NASNet), :class:`~nasjax.nn.enas_macro_network.EnasMacroNetwork` for ENAS macro, and NB201's switch
network; each takes the space's own encoding as data, so one program serves every sampled architecture.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.nn.init import init_variables
from nasjax.parallel.distributed import to_host
from nasjax.strategies.controller import Policy, controller, enas_macro_settings
from nasjax.training import EpochEnd, Position, Run, check_batch_size, cosine_schedule, init_key, run_loop
from nasjax.utils.jit import jit_with_options

CONTROLLER_KEYS = ("learning_rate", "lstm_size", "temperature", "tanh_constant", "op_tanh_reduce",
                   "entropy_weight", "baseline_decay", "skip_target", "skip_weight", "shared_heads")
POLICY_KEYS = ("lstm_size", "temperature", "tanh_constant", "op_tanh_reduce", "skip_target", "shared_heads")


def controller_options(cfg) -> dict:
  """The controller's options from the ``controller_*`` settings (every one is a command-line option)."""
  return {k: cfg["controller_" + k] for k in CONTROLLER_KEYS if "controller_" + k in cfg}


def enas_config(space: str = "enas_micro") -> ml_collections.ConfigDict:
  """The paper's CIFAR-10 search settings (micro: 150 epochs, 20 channels, 8 cells of 5 nodes, batch 160,
  30 controller steps of 10 samples; macro: 310 epochs, 36 channels, 12 layers, batch 128, 50 steps of 20).
  The learning rate follows one cosine from 0.05 to 0.0005 (the paper restarts it, SGDR)."""
  cfg = ml_collections.ConfigDict(dict(
      method="enas", space=space, epochs=150, batch_size=160, channels=20, layers=8, learning_rate=0.05,
      min_learning_rate=0.0005, momentum=0.9, weight_decay=1e-4, grad_clip=5.0, crop_padding=4, flip=True,
      controller_steps=30, controller_batch=10, controller_learning_rate=0.0035, controller_lstm_size=64,
      controller_temperature=5.0, controller_tanh_constant=1.1, controller_op_tanh_reduce=2.5,
      controller_entropy_weight=1e-4, controller_baseline_decay=0.99, controller_skip_target=0.4,
      controller_skip_weight=0.0, controller_shared_heads=True,
      derive_samples=100, derive_batches=2, valid_fraction=0.1, train_subset=0, seed=2,
      checkpoint_every_steps=0, keep_checkpoints=2, cells_per_stage=5, dw_impl="auto"))
  if space == "enas_macro":
    cfg.update(epochs=310, batch_size=128, channels=36, weight_decay=2.5e-4, controller_steps=50,
               controller_batch=20)
    cfg.update({"controller_" + k: v for k, v in enas_macro_settings().items()})
  return cfg


def demo_enas_config(space: str = "enas_micro") -> ml_collections.ConfigDict:
  """Minutes on a CPU on the embedded Fashion-MNIST subset: 4 channels, 3 cells (or 4 layers), 2 epochs."""
  cfg = enas_config(space)
  cfg.update(epochs=2, batch_size=32, channels=4, layers=3, train_subset=1600, controller_steps=5,
             controller_batch=4, derive_samples=8, derive_batches=1, valid_fraction=0.2, cells_per_stage=1)
  return cfg


def shared_network(space, cfg, num_classes: int):
  """The shared network of ``space``, called as ``apply(variables, x, arch, train=...)`` with the space's
  encoding as ``arch``."""
  from nasjax.spaces import CellSpace, EnasMacroSpace, NB201Space  # noqa: PLC0415
  if isinstance(space, NB201Space):
    from nasjax.nn.nb201_network import NB201Network  # noqa: PLC0415
    return NB201Network(channels=cfg.channels, cells_per_stage=int(cfg.cells_per_stage), num_classes=num_classes,
                        affine=False)
  from nasjax.nn.ops import Impl  # noqa: PLC0415
  # How depthwise convolutions are written (nasjax.nn.ops.Impl): the same function of the same parameters;
  # "dense" (block-diagonal) compiles faster on CPU than the "auto" choice inside the scanned slots.
  depthwise = cfg.get("dw_impl", "auto")
  if isinstance(space, EnasMacroSpace):
    from nasjax.nn.enas_macro_network import EnasMacroNetwork  # noqa: PLC0415
    return EnasMacroNetwork.for_space(space, channels=cfg.channels, num_classes=num_classes,
                                      impl=Impl(conv="xla", depthwise=depthwise))
  if isinstance(space, CellSpace):
    from nasjax.nn.cell_network import SharedCellNetwork  # noqa: PLC0415
    return SharedCellNetwork.for_space(space, channels=cfg.channels, layers=cfg.layers, num_classes=num_classes,
                                       impl=Impl(depthwise=depthwise))
  raise NasjaxError(f"--method enas runs on enas_micro, enas_macro, darts, nasnet and nb201; got "
                    f"{getattr(space, 'name', space)!r} (NAS-RL's space: --method nasrl --space nas_rl)")


def check_config(cfg) -> None:
  """Counts and rates the search cannot run with, refused before anything is built."""
  for key in ("epochs", "batch_size", "channels", "controller_steps", "controller_batch", "derive_samples",
              "derive_batches"):
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise NasjaxError(f"enas: {key} must be a positive integer; got {value!r}")
  if not 0.0 < float(cfg.valid_fraction) < 1.0:
    raise NasjaxError(f"enas: valid_fraction must be in (0, 1); got {cfg.valid_fraction!r}")
  from nasjax.nn.ops import DEPTHWISE_IMPLS  # noqa: PLC0415
  if cfg.get("dw_impl", "auto") not in DEPTHWISE_IMPLS:
    raise NasjaxError(f"enas: dw_impl must be one of {', '.join(DEPTHWISE_IMPLS)}; got {cfg.get('dw_impl')!r}")


class EnasSearch:
  """Everything an ENAS search needs, built once: shared network, controller, optimizer, jitted step."""

  def __init__(self, cfg, space, input_shape, num_classes: int, mean, std, shared_steps: int, mesh=None):
    check_config(cfg)
    self.cfg, self.space = cfg, space
    self.net = shared_network(space, cfg, num_classes)
    options = controller_options(cfg)
    self.controller = controller(space, batch_size=cfg.controller_batch, **options)
    self.policy = Policy(space, **{k: options[k] for k in POLICY_KEYS if k in options})
    self.input_shape, self.mean, self.std = tuple(input_shape), mean, std
    self.mesh = mesh or nasdata.data_mesh()
    self.schedule = cosine_schedule(cfg, cfg.epochs * shared_steps)
    self.step = jit_with_options(self._step, donate_argnums=(0,))
    # Deriving and the per-epoch record run one architecture on one batch at a time, so one compiled
    # program of each kind serves every count of samples and batches (a program over all of them
    # compiled anew for each count: the per-epoch record's one sample, then derive_samples).
    self._batch_accuracy = jax.jit(self._accuracy)
    self._draw = jax.jit(self.policy.draw)

  def init_state(self, seed: int) -> dict:
    controller_key, loop_key, arch_key = jax.random.split(jax.random.key(seed), 3)
    x = jnp.zeros((2,) + self.input_shape, jnp.float32)
    arch = self.space.sample(arch_key)
    variables = init_variables(self.net, init_key(seed), x, arch, train=False)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
            "weight_opt": {"momentum": jax.tree.map(jnp.zeros_like, variables["params"]),
                           "count": jnp.zeros((), jnp.int32)},
            # One program for the controller's dozen initialisers (op by op, each shape compiles its own)
            "controller": jax.jit(self.controller.init)(controller_key), "step": jnp.zeros((), jnp.int32),
            "key": jax.random.key_data(loop_key)}

  def _accuracy(self, params, batch_stats, arch, x, y):
    """Accuracy of ``arch`` with the shared weights on one normalised batch, BN on the batch's statistics."""
    logits, _ = self.net.apply({"params": params, "batch_stats": batch_stats}, x, arch, train=True,
                               mutable=["batch_stats"])
    return jnp.mean(jnp.argmax(logits, -1) == y)

  def _step(self, state, images, labels, phase):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    arch_key, aug_key = jax.random.split(key)
    zero = jnp.zeros((), jnp.float32)

    def shared(state):
      arch = self.policy.sample(state["controller"]["params"], arch_key).arch
      x = nasdata.augment_batch(aug_key, images, crop_padding=self.cfg.crop_padding, flip=self.cfg.flip,
                                mean=self.mean, std=self.std)

      def loss_fn(params):
        logits, updates = self.net.apply({"params": params, "batch_stats": state["batch_stats"]}, x, arch,
                                         train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates["batch_stats"])

      (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
      params, weight_opt = self._sgd(grads, state["weight_opt"], state["params"])
      new = dict(state, params=params, batch_stats=stats, weight_opt=weight_opt)
      return new, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels), "reward": zero,
                   "entropy": zero, "baseline": zero, "shared_steps": jnp.ones(()), "controller_steps": zero}

    def control(state):
      archs, cstate = self.controller.ask(state["controller"], arch_key)
      x = nasdata.normalize(images, self.mean, self.std)
      # One architecture at a time: a vmapped switch would run every op of every layer.
      rewards = lax.map(lambda a: self._accuracy(state["params"], state["batch_stats"], a, x, labels), archs)
      cstate = self.controller.tell(cstate, archs, rewards)
      return dict(state, controller=cstate), {
          "loss": zero, "accuracy": zero, "reward": jnp.mean(rewards), "entropy": cstate["entropy"],
          "baseline": cstate["baseline"], "shared_steps": zero, "controller_steps": jnp.ones(())}

    state, metrics = lax.cond(phase[0] == 1, control, shared, state)
    return dict(state, step=state["step"] + 1), metrics

  def _sgd(self, grads, opt, params):
    """SGD with momentum, weight decay and global-norm clipping on the parameters the sampled architecture
    used: a parameter array whose gradient is all zero (an op that did not run) keeps its value and its
    momentum, as PyTorch's SGD skips parameters without a gradient (the authors' reimplementations), so
    one step changes only the sampled ops."""
    cfg = self.cfg
    lr = self.schedule(opt["count"])
    norm = optax.tree.norm(grads)
    scale = jnp.where(norm < cfg.grad_clip, 1.0, cfg.grad_clip / norm)

    def leaf(g, m, p):
      active = jnp.any(g != 0)
      m_new = cfg.momentum * m + g * scale + cfg.weight_decay * p
      return jnp.where(active, p - lr * m_new, p), jnp.where(active, m_new, m)

    pairs = jax.tree.map(leaf, grads, opt["momentum"], params)
    new_params = jax.tree.map(lambda _, pair: pair[0], params, pairs)
    momentum = jax.tree.map(lambda _, pair: pair[1], params, pairs)
    return new_params, {"momentum": momentum, "count": opt["count"] + 1}

  def score(self, params, batch_stats, archs, images, labels) -> np.ndarray:
    """float32[N]: mean accuracy of each of ``archs[N]`` over the stacked normalised batches
    ``images[K, B, ...]``, ``labels[K, B]``."""
    images, labels = np.asarray(images), np.asarray(labels)
    accs = [[self._batch_accuracy(params, batch_stats, arch, x, y) for x, y in zip(images, labels)]
            for arch in np.asarray(archs)]
    return np.asarray(accs, np.float32).reshape(len(accs), len(images)).mean(axis=1)

  def sample_archs(self, controller_params, key, num_samples: int) -> np.ndarray:
    """int32[num_samples, D]: the architectures ``policy.sample`` draws with ``split(key, num_samples)``."""
    params = to_host(controller_params)
    return np.stack([np.asarray(self._draw(params, k, False)) for k in jax.random.split(key, num_samples)])

  def most_likely(self, controller_params) -> np.ndarray:
    """int32[D]: ``policy.most_likely``, by the program that samples (the key is not read)."""
    return np.asarray(self._draw(to_host(controller_params), jax.random.key(0), True))

  def derive(self, state, xv, yv, num_samples: int, num_batches: int, key) -> list[dict]:
    """Samples ``num_samples`` architectures from the controller, scores each with the shared weights on
    the first ``num_batches`` validation batches and returns them best first (ties: sampling order)."""
    b = self.cfg.batch_size
    n = min(len(xv) // b, num_batches)
    if n < 1:
      raise NasjaxError(f"enas: deriving needs a validation batch of {b} images; the split has {len(xv)}")
    images = nasdata.normalize(jnp.asarray(xv[:n * b], jnp.float32), self.mean, self.std)
    images = images.reshape(n, b, *images.shape[1:])
    labels = jnp.asarray(yv[:n * b], jnp.int32).reshape(n, b)
    archs = self.sample_archs(state["controller"]["params"], key, num_samples)
    scores = self.score(state["params"], state["batch_stats"], archs, images, labels)
    order = np.argsort(-scores, kind="stable")
    return [{"arch": [int(v) for v in archs[i]], "genotype": self.space.to_string(archs[i]),
             "valid_accuracy": float(scores[i])} for i in order]


def _phase_batches(train: nasdata.Batcher, valid: nasdata.Batcher, shared_steps: int, controller_steps: int):
  """``batches(epoch, start_step)`` of the loop: the epoch's training batches, then its controller steps'
  validation batches (cycling through the validation split across epochs), each with its phase flag."""
  def batches(epoch, start_step):
    b = train.batch_size
    if start_step < shared_steps:
      for x, y in train.epoch(epoch, start_step):
        yield x, y, np.zeros(b, np.int32)
    for j in range(max(0, start_step - shared_steps), controller_steps):
      g = epoch * controller_steps + j
      x, y = next(iter(valid.epoch(g // valid.steps_per_epoch, g % valid.steps_per_epoch)))
      yield x, y, np.ones(b, np.int32)
  return batches


def identity_config(cfg) -> dict:
  """The settings a run's checkpoints record as its identity: ``cfg`` without ``dw_impl`` when it is
  ``"auto"``, what every run did before the key existed, so those runs still resume; another value (a
  different program) is part of the identity."""
  config = cfg.to_dict()
  if config.get("dw_impl", "auto") == "auto":
    config.pop("dw_impl", None)
  return config


def run_enas(cfg, space, dataset: nasdata.Dataset, *, workdir: str | None = None, identity: dict | None = None,
             show_progress: bool = True, stop_after_steps: int | None = None, mesh=None) -> dict:
  """Runs an ENAS search (see the module docstring); returns the derived architecture and the history.

  With ``workdir``: checkpoints of the whole state (shared weights, controller) with exact resume, and
  ``metrics.jsonl`` (per epoch: training loss and accuracy, mean reward, controller entropy and baseline,
  the controller's most likely architecture). ``stop_after_steps`` ends the call as a killed process would.
  """
  check_config(cfg)
  x, y = dataset.x_train, dataset.y_train
  if cfg.train_subset:
    x, y = nasdata.subset(x, y, cfg.train_subset, cfg.seed)
  xt, yt, xv, yv = nasdata.train_valid_split(x, y, cfg.valid_fraction, cfg.seed)
  yt, yv = yt.astype(np.int32), yv.astype(np.int32)
  train = nasdata.Batcher(xt, yt, cfg.batch_size, seed=cfg.seed)
  valid = nasdata.Batcher(xv, yv, cfg.batch_size, seed=cfg.seed + 1)
  shared_steps = train.steps_per_epoch
  steps_per_epoch = shared_steps + cfg.controller_steps
  search = EnasSearch(cfg, space, dataset.input_shape, dataset.num_classes, dataset.mean, dataset.std,
                      shared_steps, mesh)
  mesh = search.mesh
  check_batch_size(cfg.batch_size, mesh)
  state = search.init_state(cfg.seed)
  identity = dict(identity or {}, config=identity_config(cfg), space=space.name, dataset=dataset.fingerprint)
  history: list[dict] = []
  start, run = Position(), None
  if workdir is not None:
    run = Run(workdir, identity, cfg.keep_checkpoints, steps_per_epoch=steps_per_epoch)
    state, start, history = run.resume(state)
  t_start = time.perf_counter()

  def end_epoch(state, info: EpochEnd, history):
    shared_n = max(info.sums.get("shared_steps", 0.0), 1.0)
    control_n = max(info.sums.get("controller_steps", 0.0), 1.0)
    most_likely = search.most_likely(state["controller"]["params"])
    record: dict[str, Any] = {
        "epoch": info.epoch + 1, "seconds": info.seconds,
        "learning_rate": float(search.schedule(info.epoch * shared_steps)),
        "train_loss": info.sums.get("loss", 0.0) / shared_n,
        "train_accuracy": info.sums.get("accuracy", 0.0) / shared_n,
        "reward": info.sums.get("reward", 0.0) / control_n, "entropy": info.sums.get("entropy", 0.0) / control_n,
        "baseline": info.sums.get("baseline", 0.0) / control_n,
        "most_likely": [int(v) for v in most_likely], "most_likely_genotype": space.to_string(most_likely)}
    best = search.derive(state, xv, yv, 1, 1, jax.random.key(info.epoch))  # one fresh sample per epoch
    previous = max((h.get("best_sample_accuracy", -1.0) for h in history), default=-1.0)
    if best[0]["valid_accuracy"] > previous:
      record.update(best_sample=best[0]["genotype"], best_sample_accuracy=best[0]["valid_accuracy"])
    else:
      last = next(h for h in reversed(history) if h.get("best_sample_accuracy", -1.0) == previous)
      record.update(best_sample=last["best_sample"], best_sample_accuracy=previous)
    return record

  def diverged(metric, value, epoch, step):
    return (f"{metric.replace('_', ' ')} became {value} at epoch {epoch}, step {step} of the ENAS search; the "
            "last good checkpoint is kept" + (f" in {workdir}" if workdir else ""))

  try:
    out = run_loop(lambda state, batch, epoch: search.step(state, *batch), nasdata.replicate(state, mesh),
                   _phase_batches(train, valid, shared_steps, cfg.controller_steps), epochs=cfg.epochs,
                   steps_per_epoch=steps_per_epoch, end_epoch=end_epoch, mesh=mesh, start=start, history=history,
                   run=run, divergence_message=diverged, checkpoint_every_steps=cfg.checkpoint_every_steps,
                   stop_after_steps=stop_after_steps, desc="enas epoch", show_progress=show_progress,
                   initial_sums={"loss": 0.0, "accuracy": 0.0, "reward": 0.0, "shared_steps": 0.0,
                                 "controller_steps": 0.0})
  finally:
    if run is not None:
      run.close()
  state, history = out.state, out.history
  if not out.finished:
    return out.interrupted()
  ranking = search.derive(state, xv, yv, cfg.derive_samples, cfg.derive_batches, jax.random.key(cfg.seed + 23))
  return {"finished": True, "method": "enas", "space": space.name, "epochs_run": out.position.epoch,
          "seconds": time.perf_counter() - t_start, "history": history, "state": state,
          "arch": ranking[0]["arch"], "genotype": ranking[0]["genotype"],
          "valid_accuracy": ranking[0]["valid_accuracy"], "ranking": ranking}
