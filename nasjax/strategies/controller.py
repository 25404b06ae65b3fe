"""An LSTM controller trained by REINFORCE, as an ``init / ask / tell`` strategy over any registered space.

The controller of NAS-RL (Zoph & Le, "Neural Architecture Search with Reinforcement Learning", ICLR 2017)
and ENAS (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018): an LSTM
emits the architecture decision by decision; each decision's logits come from the LSTM output (a softmax
head per decision as in NAS-RL, or one per group of decisions such as every op as in ENAS: ``shared_heads``, attention over earlier nodes' anchors for a cell node's inputs, the two
layers' anchors for a skip connection, see :mod:`.controller_layout`); the sampled value, embedded, is the
next input, plus a learned embedding of the decision about to be emitted (ENAS tells positions apart by the
recurrence alone; with the position in the input a shared head separates same-group decisions from the
first step, and the controller no longer locks every position of a group onto one early favourite). Logits
go through ENAS's sharpening controls: divided by ``temperature``, then
``tanh_constant * tanh(.)`` (divided again by ``op_tanh_reduce`` for categorical choices).

``tell`` takes one Adam step on the REINFORCE objective with a moving-average baseline (Williams, Machine
Learning 1992)::

    loss = -mean_i (r_i - b) log p(a_i) - entropy_weight * mean_i H_i + skip_weight * mean KL(p_skip || skip_target)

where ``H_i`` is the entropy of the decisions along sample ``i`` and the last term is ENAS macro's pull of
the skip probabilities towards ``skip_target``. Then ``b <- decay * b + (1 - decay) * mean_i r_i`` (the first
batch sets ``b``). Failed samples (NaN reward) get no gradient and leave the baseline alone. ``tell``
recomputes the log-probabilities of the rows it is told by teacher forcing, so a driver may tell a prefix
of the asked rows or other valid architectures. The defaults are ENAS micro's controller settings (LSTM 64,
Adam 0.0035, temperature 5, tanh constant 1.1, op tanh reduce 2.5, entropy weight 1e-4, baseline decay
0.99); :func:`enas_macro_settings` gives the macro search's.

Everything is pure jnp over an explicit state, so a search jits, and seeds vmap.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.errors import NasjaxError
from nasjax.strategies.base import Strategy, check_float, check_int, check_space, clean_fitness, initial_best, \
    update_best
from nasjax.strategies.controller_layout import CHOICE, POINTER, SKIP, Layout, controller_layout

_MASKED = -1e9  # finite: 0 * masked logit stays 0 in entropies and their gradients


def _enas_uniform(key, shape, dtype=jnp.float32):
  """ENAS's initialiser for the controller's weights: uniform in [-0.1, 0.1]."""
  return jax.random.uniform(key, shape, dtype, -0.1, 0.1)


def enas_macro_settings() -> dict:
  """ENAS macro search's controller options (Pham et al. 2018, the authors' macro search script)."""
  return {"learning_rate": 0.001, "temperature": 1.0, "tanh_constant": 1.5, "op_tanh_reduce": 1.0,
          "skip_target": 0.4, "skip_weight": 0.8}


def nasrl_settings() -> dict:
  """NAS-RL's controller options (Zoph & Le 2017, section 4: 35 hidden units, Adam at 0.0006, a moving
  average of earlier rewards as the baseline; no sharpening). The paper's LSTM has two layers, ours one;
  the baseline decay (0.95) is our choice, the paper gives none."""
  return {"lstm_size": 35, "learning_rate": 0.0006, "temperature": None, "tanh_constant": None,
          "entropy_weight": 0.0, "baseline_decay": 0.95}


class Rollout(NamedTuple):
  arch: jax.Array           # int32[D]
  log_prob: jax.Array       # float32: sum over decisions
  entropy: jax.Array        # float32: sum over decisions of each decision's entropy
  skip_kl: jax.Array        # float32: mean KL(p_skip || target) over skip decisions (0 without any)
  decision_log_probs: jax.Array  # float32[D], by decision index


class Policy:
  """The controller network and its rollouts; ``params`` is a plain pytree.

  ``sample(params, key)`` draws an architecture; ``evaluate(params, arch)`` scores a given one by teacher
  forcing; ``most_likely(params)`` follows the arg-max of every decision.
  """

  def __init__(self, space, lstm_size: int = 64, temperature: float | None = 5.0, tanh_constant: float | None = 1.1,
               op_tanh_reduce: float = 2.5, skip_target: float = 0.4, shared_heads: bool = False):
    self.space = space
    self.layout: Layout = controller_layout(space)
    self.lstm_size = lstm_size
    self.temperature = temperature
    self.tanh_constant = tanh_constant
    self.op_tanh_reduce = op_tanh_reduce
    self.skip_target = skip_target
    self.shared_heads = bool(shared_heads)
    # The recurrent kernel is drawn like every other controller weight (ENAS's uniform [-0.1, 0.1]), not by
    # flax's default orthogonal init. That init is a QR decomposition: LAPACK custom calls (geqrf, orgqr),
    # batched over seeds when a search is vmapped. From jaxlib 0.10.0 (jax commit bfd9e1f) the CPU LAPACK
    # kernels split a batch over XLA's intra-op thread pool and block the calling pool thread until the
    # pieces finish (open-source builds stopped with jax commit 8599924, jax-ml/jax#36927, after 0.11.0).
    # When the thunk executor runs two of the LSTM's four QRs at once on a two-thread pool, both threads wait
    # on pieces queued behind them and the search never returns (4 seeds x 50 queries on two cores). No QR,
    # no deadlock; see tests/test_controller.py::test_vmapped_search_has_no_lapack_call.
    self._lstm = nn.OptimizedLSTMCell(lstm_size, recurrent_kernel_init=_enas_uniform)
    # Kinds of decision the space has: a rollout traces the attention of pointers and skip bits, and the
    # anchors' bookkeeping, only where some decision reads them (NB201 has choices only), so its program
    # is smaller and compiles faster; the values are those of the general program.
    self._has_pointer = bool(np.any(self.layout.kind == POINTER))
    self._has_skip = bool(np.any(self.layout.kind == SKIP))
    self._has_anchors = self._has_pointer or self._has_skip or bool(np.any(self.layout.anchor_write >= 0))

  # ------------------------------------------------------------------------------------------ params
  def init(self, key) -> dict:
    lay, h = self.layout, self.lstm_size
    keys = jax.random.split(key, 8)
    groups, width = max(len(lay.group_names), 1), lay.width
    heads = groups if self.shared_heads else lay.num_decisions
    uniform = _enas_uniform
    carry = self._lstm.initialize_carry(keys[0], (h,))
    return {"lstm": self._lstm.init(keys[1], carry, jnp.zeros((h,)))["params"],
            "start": uniform(keys[2], (h,)),
            "head_w": uniform(keys[3], (heads, h, width)), "head_b": jnp.zeros((heads, width)),
            "embedding": uniform(keys[4], (groups, width, h)),
            "anchors": uniform(keys[5], (lay.num_anchors, h)),
            "w_key": uniform(keys[6], (h, h)), "w_query": uniform(keys[7], (h, h)),
            "v": uniform(jax.random.fold_in(key, 9), (h,)),
            "position": uniform(jax.random.fold_in(key, 10), (lay.num_decisions, h))}

  # ------------------------------------------------------------------------------------------ one decision
  def _logits(self, params, h, anchors, arch, d):
    lay = self.layout
    width = lay.width
    kind = jnp.asarray(lay.kind)[d]
    group = jnp.asarray(lay.group)[d]
    head = group if self.shared_heads else d
    choice = h @ params["head_w"][head] + params["head_b"][head]
    attend = lambda keys, query: jnp.tanh(keys @ params["w_key"] + query @ params["w_query"]) @ params["v"]  # noqa: E731
    base = jnp.asarray(lay.key_base)[d]
    # Every decision has a learned prior over its values (the softmax head's bias), so decisions that share
    # the attention weights (all skip bits, all of a cell's inputs) can still settle on different values.
    bias = params["head_b"][head]
    logits = choice
    if self._has_skip:
      # NAS-RL's anchor point: P(layer j feeds layer i) = sigmoid(v . tanh(W_prev h_j + W_curr h_i)), h_i
      # the controller's current hidden state.
      skip = jnp.zeros((width,)).at[1].set(attend(anchors[base], h))
      logits = jnp.where(kind == SKIP, skip + bias, logits)
    if self._has_pointer:
      candidates = anchors[jnp.clip(base + jnp.arange(width), 0, lay.num_anchors - 1)]
      logits = jnp.where(kind == POINTER, attend(candidates, h) + bias, logits)
    if self.temperature is not None:
      logits = logits / self.temperature
    if self.tanh_constant is not None:
      scale = jnp.where(kind == CHOICE, self.tanh_constant / self.op_tanh_reduce, self.tanh_constant)
      logits = scale * jnp.tanh(logits)
    return jnp.where(self._mask(arch, d), logits, _MASKED)

  def _mask(self, arch, d):
    lay = self.layout
    values = jnp.arange(lay.width)
    valid = values < jnp.asarray(lay.num_choices)[d]
    exclude = jnp.asarray(lay.exclude_pos)[d]
    valid &= (exclude < 0) | (values != arch[jnp.maximum(exclude, 0)])
    gate = jnp.asarray(lay.type_pos)[d]
    used = jnp.asarray(lay.uses)[arch[jnp.maximum(gate, 0)], jnp.asarray(lay.field)[d]]
    return jnp.where((gate >= 0) & ~used, values == 0, valid)

  def _step(self, params, carry, t, choose):
    """One emitted decision: ``choose(logits, d) -> value``; returns the new carry and the decision's
    (index, log-probability, entropy, skip KL)."""
    lay = self.layout
    lstm_carry, x, anchors, arch = carry
    d = jnp.asarray(lay.order)[t]
    lstm_carry, h = self._lstm.apply({"params": params["lstm"]}, lstm_carry, x + params["position"][d])
    logits = self._logits(params, h, anchors, arch, d)
    value = choose(logits, d).astype(jnp.int32)
    logp = jax.nn.log_softmax(logits)
    entropy = -jnp.sum(jnp.exp(logp) * logp)
    kind = jnp.asarray(lay.kind)[d]
    group = jnp.asarray(lay.group)[d]
    kl = jnp.zeros((), logp.dtype)
    if self._has_skip:
      p_skip = jnp.exp(logp[1])
      q = self.skip_target
      kl = p_skip * jnp.log(p_skip / q + 1e-12) + (1 - p_skip) * jnp.log((1 - p_skip) / (1 - q) + 1e-12)
      kl = jnp.where(kind == SKIP, kl, 0.0)
    x = params["embedding"][group, value]
    if self._has_pointer:
      pointed = anchors[jnp.clip(jnp.asarray(lay.key_base)[d] + value, 0, lay.num_anchors - 1)]
      x = jnp.where(kind == POINTER, pointed, x)
    if self._has_anchors:
      write = jnp.asarray(lay.anchor_write)[d]
      anchors = jnp.where((write >= 0) & (jnp.arange(lay.num_anchors) == write)[:, None], h[None], anchors)
    arch = arch.at[d].set(value)
    return (lstm_carry, x, anchors, arch), (d, logp[value], entropy, kl)

  def _initial_carry(self, params):
    lstm_carry = self._lstm.initialize_carry(jax.random.key(0), (self.lstm_size,))
    return (lstm_carry, params["start"], params["anchors"], jnp.zeros((self.layout.num_decisions,), jnp.int32))

  def _rollout(self, params, choose) -> Rollout:
    lay = self.layout
    params = jax.tree.map(jnp.asarray, params)  # host (numpy) parameters are indexed by traced decisions

    def body(carry, t):
      return self._step(params, carry, t, choose)

    (_, _, _, arch), (d, logp, entropy, kl) = jax.lax.scan(body, self._initial_carry(params),
                                                          jnp.arange(lay.num_decisions))
    num_skips = max(int(np.sum(lay.kind == SKIP)), 1)
    per_decision = jnp.zeros((lay.num_decisions,)).at[d].set(logp)
    return Rollout(arch, jnp.sum(logp), jnp.sum(entropy), jnp.sum(kl) / num_skips, per_decision)

  # ------------------------------------------------------------------------------------------ public
  def sample(self, params, key) -> Rollout:
    keys = jax.random.split(key, self.layout.num_decisions)
    return self._rollout(params, lambda logits, d: jax.random.categorical(keys[d], logits))

  def evaluate(self, params, arch) -> Rollout:
    arch = jnp.asarray(arch, jnp.int32)
    return self._rollout(params, lambda logits, d: arch[d])

  def most_likely(self, params) -> jax.Array:
    return self._rollout(params, lambda logits, d: jnp.argmax(logits)).arch

  def draw(self, params, key, greedy) -> jax.Array:
    """``sample(params, key).arch``, or ``most_likely(params)`` where the (traced) flag ``greedy`` is set.

    One jitted ``draw`` serves a driver that wants both (ENAS' per-epoch record and its derive step)
    with one compiled program instead of two; the architectures are those of the two methods."""
    keys = jax.random.split(key, self.layout.num_decisions)
    greedy = jnp.asarray(greedy, bool)
    return self._rollout(params, lambda logits, d: jnp.where(greedy, jnp.argmax(logits),
                                                             jax.random.categorical(keys[d], logits))).arch


def controller(space, learning_rate: float = 0.0035, batch_size: int = 10, lstm_size: int = 64,
               temperature: float | None = 5.0, tanh_constant: float | None = 1.1, op_tanh_reduce: float = 2.5,
               entropy_weight: float = 1e-4, baseline_decay: float = 0.99, skip_target: float = 0.4,
               skip_weight: float = 0.0, shared_heads: bool = False) -> Strategy:
  """The LSTM controller as a :class:`~nasjax.strategies.base.Strategy` (see the module docstring).

  Args:
    space: any registered search space.
    learning_rate: Adam step size.
    batch_size: architectures per ``ask``; one policy step per ``tell`` (ENAS aggregates 10 in micro search).
    lstm_size: hidden units of the LSTM (ENAS: 64; NAS-RL: 35).
    temperature: logits are divided by it (None: not at all).
    tanh_constant: logits become ``c * tanh(logits)`` (None: unbounded).
    op_tanh_reduce: categorical choices use ``tanh_constant / op_tanh_reduce``.
    entropy_weight: weight of the entropy bonus.
    baseline_decay: moving-average decay of the reward baseline, in [0, 1).
    skip_target, skip_weight: ENAS macro's KL pull of skip-connection probabilities towards the target.
    shared_heads: one softmax head per group of decisions (ENAS shares the op head across nodes) instead of
      one per decision (NAS-RL). A shared head learns slower where decisions of a group want different
      values: on NB201 it can lock every edge onto the op most edges want.

  >>> from nasjax.spaces import NB201Space
  >>> s = controller(NB201Space(), batch_size=4)
  """
  name = "controller"
  check_space(name, space)
  learning_rate = check_float(name, "learning_rate", learning_rate, 0.0, float("inf"), low_open=True,
                              high_open=True)
  batch_size = check_int(name, "batch_size", batch_size)
  lstm_size = check_int(name, "lstm_size", lstm_size)
  if temperature is not None:
    temperature = check_float(name, "temperature", temperature, 0.0, float("inf"), low_open=True, high_open=True)
  if tanh_constant is not None:
    tanh_constant = check_float(name, "tanh_constant", tanh_constant, 0.0, float("inf"), low_open=True,
                                high_open=True)
  op_tanh_reduce = check_float(name, "op_tanh_reduce", op_tanh_reduce, 0.0, float("inf"), low_open=True,
                               high_open=True)
  entropy_weight = check_float(name, "entropy_weight", entropy_weight, 0.0, float("inf"), high_open=True)
  decay = check_float(name, "baseline_decay", baseline_decay, 0.0, 1.0, high_open=True)
  skip_target = check_float(name, "skip_target", skip_target, 0.0, 1.0, low_open=True, high_open=True)
  skip_weight = check_float(name, "skip_weight", skip_weight, 0.0, float("inf"), high_open=True)
  policy = Policy(space, lstm_size, temperature, tanh_constant, op_tanh_reduce, skip_target, shared_heads)
  optimizer = optax.adam(learning_rate)
  dims = space.num_decisions

  def init(key):
    params = policy.init(key)
    return {**initial_best(dims), "params": params, "opt_state": optimizer.init(params),
            "baseline": jnp.zeros((), jnp.float32), "has_baseline": jnp.asarray(False),
            "entropy": jnp.zeros((), jnp.float32), "reward": jnp.zeros((), jnp.float32)}

  def ask(state, key):
    rollouts = jax.vmap(policy.sample, in_axes=(None, 0))(state["params"], jax.random.split(key, batch_size))
    return rollouts.arch, state

  def tell(state, archs, fitness):
    archs = jnp.asarray(archs, jnp.int32)
    reward = clean_fitness(fitness)
    ok = reward > -jnp.inf
    num_ok = jnp.maximum(jnp.sum(ok), 1)
    mean_reward = jnp.sum(jnp.where(ok, reward, 0.0)) / num_ok
    step = jnp.any(ok)
    baseline = jnp.where(state["has_baseline"], state["baseline"], mean_reward)
    advantage = jnp.where(ok, reward - baseline, 0.0)

    def loss(params):
      r = jax.vmap(policy.evaluate, in_axes=(None, 0))(params, archs)
      weight = ok.astype(jnp.float32) / num_ok
      objective = (-jnp.sum(weight * advantage * r.log_prob) - entropy_weight * jnp.sum(weight * r.entropy)
                   + skip_weight * jnp.sum(weight * r.skip_kl))
      return objective, jnp.sum(weight * r.entropy)

    grads, entropy = jax.grad(loss, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(step, a, b), new, old)  # noqa: E731
    out = update_best(state, archs, fitness)
    return {**out, "params": keep(params, state["params"]), "opt_state": keep(opt_state, state["opt_state"]),
            "baseline": jnp.where(step, decay * baseline + (1 - decay) * mean_reward, state["baseline"]),
            "has_baseline": state["has_baseline"] | step, "entropy": jnp.where(step, entropy, state["entropy"]),
            "reward": jnp.where(step, mean_reward, state["reward"])}

  return Strategy(init, ask, tell, name=name)


def policy_of(space, **options: Any) -> Policy:
  """The :class:`Policy` a ``controller(space, **options)`` strategy samples from (for evaluation and tests)."""
  keys = ("lstm_size", "temperature", "tanh_constant", "op_tanh_reduce", "skip_target", "shared_heads")
  unknown = sorted(set(options) - set(keys))
  if unknown:
    raise NasjaxError(f"policy_of does not take {', '.join(unknown)}; accepted: {', '.join(keys)}")
  return Policy(space, **options)
