"""Network morphisms: function-preserving growth of chain networks, and warm-started evaluation.

Chen, Goodfellow & Shlens, "Net2Net: Accelerating Learning via Knowledge Transfer", ICLR 2016 (widening
by replicating units with a random mapping and dividing the consumers' incoming weights by the replication
counts; deepening by inserting an identity-initialised layer, exact when the activation is idempotent as
ReLU is); Wei, Wang, Rui & Chen, "Network Morphism", ICML 2016 (morphisms as function-preserving
transforms). Elsken, Metzen & Hutter, "Simple and Efficient Architecture Search for CNNs" (NASH),
ICLR-W 2018 / "Efficient Multi-objective NAS via Lamarckian Evolution", ICLR 2019, and Cai et al.,
"Efficient Architecture Search by Network Transformation", AAAI 2018, use such morphisms so that a child
starts from its parent's trained weights and needs only a short fine-tuning.

Transforms on :class:`~nasjax.nn.chain_network.ChainNetwork` variables, each returning the child encoding
(valid in the same :class:`~nasjax.spaces.macro.MacroSpace`) and child variables whose eval-mode outputs
equal the parent's:

* **widen** a conv or dense layer to a larger ``filters`` value of the space: the first channels keep
  their weights, each new channel copies a randomly chosen old one (kernel, and BatchNorm scale, bias,
  running mean and variance), and every consumer of those channels -- through pooling and identity
  layers, skip concatenations, up to the classifier -- divides the weights it reads from a replicated
  channel by the channel's replication count.
* **deepen**: the encoding has a fixed number of layers, so depth grows where an ``identity`` layer
  stands: it becomes a stride-1 conv with an odd kernel and as many filters as it has input channels,
  initialised to the identity (centre tap), with BatchNorm set to the identity for its running statistics
  (scale ``sqrt(var + eps)``, bias ``mean``). Exact because its input is non-negative (the output of ReLUs,
  max pools of them, or their zero padding) and ReLU is the identity there.
* **skip**: set one skip bit (layer ``k`` from layer ``j < k - 1``; the bit from ``k - 1`` repeats the chain
  edge). The new input channels get zero incoming weights wherever they are first read by a
  parametric layer, so nothing changes. Allowed only when layer ``j``'s map is no larger than layer
  ``k``'s other inputs, so zero padding does not change layer ``k``'s resolution.

A transform that cannot apply (a layer already at the space's largest ``filters``, no identity layer whose
input qualifies, no skip left to add) raises :class:`~nasjax.errors.NasjaxError`;
:func:`morphism_mutation` chooses only among the transforms that apply, and raises only when none does.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.estimators.curves import make_epoch_fn
from nasjax.estimators.train import estimation_splits, short_training_config
from nasjax.nn.chain_network import (CLASSIFIER, IMAGE, ChainNetwork, LayerPlan, chain_model_fn,
                                     chain_network, init_variables, layer_names, plan_network)
from nasjax.nn.ops import BN_EPSILON
from nasjax.spaces.macro import MacroSpace
from nasjax.training import init_key as train_init_key

KINDS = ("widen", "deepen", "skip")


@dataclasses.dataclass(frozen=True)
class Morph:
  """One concrete transform: ``kind`` at ``layer`` with its target (``filters`` value for widen,
  ``kernel`` (h, w) for deepen, skip ``source`` layer for skip)."""
  kind: str
  layer: int
  filters: int | None = None
  kernel: tuple[int, int] | None = None
  source: int | None = None


def _host_rng(key: jax.Array) -> np.random.Generator:
  """A numpy generator seeded by the key's bits: the draws here are a handful of host-side integers of
  varying counts, which jax.random would recompile for every count."""
  if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    bits = np.asarray(jax.random.key_data(key))
  else:
    bits = np.asarray(key)
    if bits.dtype != np.uint32 or bits.ndim != 1:
      raise NasjaxError(f"expected a PRNG key (jax.random.key or jax.random.PRNGKey); got {type(key).__name__} "
                        f"of dtype {getattr(bits, 'dtype', None)}")
  return np.random.default_rng(bits.astype(np.uint64).ravel().tolist())


# ---------------------------------------------------------------------------------------------- planning
def _plan(space, arch, input_shape):
  if not isinstance(space, MacroSpace):
    raise NasjaxError(f"network morphisms act on MacroSpace architectures (macro, nas_rl); got "
                      f"{getattr(space, 'name', type(space).__name__)!r}")
  return plan_network(space, arch, input_shape)


def _layer_slice(space: MacroSpace, k: int) -> slice:
  return slice(space.field_index(k, "type"), space.field_index(k + 1, "type"))


def applicable_morphs(space: MacroSpace, arch: Any, input_shape: Any, kinds=KINDS) -> list[Morph]:
  """Every concrete transform of ``kinds`` that applies to ``arch`` (deterministic order)."""
  plans = _plan(space, arch, input_shape)
  kinds = _check_kinds(kinds)
  a = space.check(arch)
  out: list[Morph] = []
  if "widen" in kinds:
    for p in plans:
      if p.type in ("conv", "dense"):
        out += [Morph("widen", p.index, filters=f) for f in space.filters if f > p.filters]
  if "deepen" in kinds and "conv" in space.layer_types and 1 in space.strides:
    odd = [k for k in space.kernel_sizes if k % 2 == 1]
    for p in plans:
      if p.type == "identity" and p.nonnegative and p.in_channels in space.filters:
        out += [Morph("deepen", p.index, kernel=(kh, kw)) for kh in odd for kw in odd]
  if "skip" in kinds and space.skips:
    for p in plans[2:]:
      for j in range(p.index - 1):
        hw = plans[j].out_hw
        if not a[space._skip_offset(p.index) + j] and hw[0] <= p.in_hw[0] and hw[1] <= p.in_hw[1]:
          out.append(Morph("skip", p.index, source=j))
  return out


def _check_kinds(kinds) -> tuple[str, ...]:
  kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
  if not kinds or any(k not in KINDS for k in kinds):
    raise NasjaxError(f"morphism kinds must be a non-empty subset of {KINDS}; got {kinds!r}")
  return kinds


def child_arch(space: MacroSpace, arch: Any, morph: Morph, input_shape: Any) -> np.ndarray:
  """The encoding after ``morph`` (applicability is checked by :func:`apply_morph`, not here)."""
  child = space.check(arch).copy()
  k = morph.layer
  if morph.kind == "widen":
    child[space.field_index(k, "filters")] = space.filters.index(morph.filters)
  elif morph.kind == "deepen":
    in_channels = plan_network(space, arch, input_shape)[k].in_channels
    child[_layer_slice(space, k)] = ((space.layer_types.index("conv"), space.kernel_sizes.index(morph.kernel[0]),
                                      space.kernel_sizes.index(morph.kernel[1]), space.filters.index(in_channels))
                                     + (space.strides.index(1),) * (len(space.fields) - 3))
  elif morph.kind == "skip":
    child[space._skip_offset(k) + morph.source] = 1
  return child


def find_morph(space: MacroSpace, parent: Any, child: Any, input_shape: Any) -> Morph | None:
  """The single transform that turns ``parent`` into ``child``, or None when there is none."""
  p, c = space.check(parent), space.check(child)
  if np.array_equal(p, c):
    return None
  for m in applicable_morphs(space, p, input_shape):
    if np.array_equal(child_arch(space, p, m, input_shape), c):
      return m
  return None


# ---------------------------------------------------------------------------------------------- weights
def _channel_maps(parent_plans: tuple[LayerPlan, ...], child_plans: tuple[LayerPlan, ...], image_channels: int,
                  out_sel: dict[int, np.ndarray]):
  """For every layer of the child: ``in_map`` (child input channel -> parent input channel, -1 for a
  channel with no parent counterpart) and ``out_map`` (likewise for the output), by following channels
  through concatenations, pooling and identity layers."""
  in_maps, out_maps = [], []
  for pp, cp in zip(parent_plans, child_plans):
    parts, parent_offsets, offset = [], {}, 0
    for s in pp.sources:
      parent_offsets[s] = offset
      offset += image_channels if s == IMAGE else parent_plans[s].out_channels
    for s in cp.sources:
      src_map = np.arange(image_channels) if s == IMAGE else out_maps[s]
      if s in parent_offsets:
        parts.append(np.where(src_map >= 0, src_map + parent_offsets[s], -1))
      else:
        parts.append(np.full(src_map.shape, -1))
    in_map = np.concatenate(parts)
    if cp.type in ("conv", "dense") and pp.type == cp.type:
      out_map = out_sel.get(cp.index, np.arange(cp.filters))
    else:
      # pool and identity pass their input through; so does the identity-initialised conv of deepen.
      out_map = in_map
    in_maps.append(in_map)
    out_maps.append(out_map)
  return in_maps, out_maps


def _incoming(weights: np.ndarray, in_map: np.ndarray, axis: int) -> np.ndarray:
  """Rows of ``weights`` (along ``axis``) for the child inputs: a replicated input shares its parent's
  row, divided by the replication count; an input new to the child gets zeros."""
  counts = np.bincount(in_map[in_map >= 0], minlength=weights.shape[axis])
  taken = np.take(weights, np.maximum(in_map, 0), axis=axis)
  scale = np.where(in_map >= 0, 1.0 / np.maximum(counts[np.maximum(in_map, 0)], 1), 0.0)
  shape = [1] * weights.ndim
  shape[axis] = -1
  return (taken * scale.reshape(shape)).astype(weights.dtype)


def _transfer(space, parent_arch, child_arch_, variables, input_shape, out_sel, rng=None,
              noise_std: float = 0.0) -> dict:
  parent_plans = plan_network(space, parent_arch, input_shape)
  child_plans = plan_network(space, child_arch_, input_shape)
  in_maps, out_maps = _channel_maps(parent_plans, child_plans, input_shape[2], out_sel)
  params = jax.tree_util.tree_map(np.asarray, dict(variables["params"]))
  stats = jax.tree_util.tree_map(np.asarray, dict(variables.get("batch_stats", {})))
  new_params, new_stats = {}, {}
  for pp, cp in zip(parent_plans, child_plans):
    names = layer_names(cp)
    if cp.type == "conv" and pp.type == "identity":
      kh, kw = cp.kernel
      kernel = np.zeros((kh, kw, cp.in_channels, cp.filters), np.float32)
      kernel[kh // 2, kw // 2] = np.eye(cp.in_channels, dtype=np.float32)
      mean = np.zeros(cp.filters, np.float32)
      var = np.ones(cp.filters, np.float32)
      new_params[names["conv"]] = {"kernel": kernel}
      # BN(y) = scale * (y - mean) / sqrt(var + eps) + bias is the identity for these values.
      new_params[names["bn"]] = {"scale": np.sqrt(var + BN_EPSILON), "bias": mean.copy()}
      new_stats[names["bn"]] = {"mean": mean, "var": var}
      continue
    if cp.type == "conv":
      cols = out_maps[cp.index]
      kernel = _incoming(params[names["conv"]]["kernel"], in_maps[cp.index], axis=2)[..., cols]
      if noise_std and cp.index in out_sel and cols.size > pp.filters:
        extra = rng.normal(size=kernel[..., pp.filters:].shape)
        kernel[..., pp.filters:] += (noise_std * np.std(kernel) * extra).astype(kernel.dtype)
      new_params[names["conv"]] = {"kernel": kernel}
      new_params[names["bn"]] = {k: v[cols] for k, v in params[names["bn"]].items()}
      new_stats[names["bn"]] = {k: v[cols] for k, v in stats[names["bn"]].items()}
    elif cp.type == "dense":
      cols = out_maps[cp.index]
      kernel = _incoming(params[names["dense"]]["kernel"], in_maps[cp.index], axis=0)[:, cols]
      new_params[names["dense"]] = {"kernel": kernel, "bias": params[names["dense"]]["bias"][cols]}
  head = params[CLASSIFIER]
  new_params[CLASSIFIER] = {"kernel": _incoming(head["kernel"], out_maps[-1], axis=0), "bias": head["bias"]}
  out = {"params": new_params}
  if new_stats or "batch_stats" in variables:
    out["batch_stats"] = new_stats
  return jax.tree_util.tree_map(jnp.asarray, out)


def apply_morph(space: MacroSpace, key: jax.Array, arch: Any, variables: dict, morph: Morph, *,
                input_shape: Any, noise_std: float = 0.0) -> tuple[np.ndarray, dict]:
  """Applies ``morph`` (one of :func:`applicable_morphs`) to ``(arch, variables)``.

  ``key`` draws the replication mapping of a widening (and the optional symmetry-breaking noise,
  ``noise_std`` times the kernel's standard deviation, added to the replicated channels' kernels;
  with noise the child is only approximately equal to the parent).
  """
  input_shape = tuple(input_shape)
  parent = space.check(arch)
  if morph not in applicable_morphs(space, parent, input_shape, (morph.kind,) if morph.kind in KINDS
                                    else KINDS):
    raise NasjaxError(f"the transform {morph} does not apply to {space.to_string(parent)!r}; see "
                      "applicable_morphs for those that do")
  if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not noise_std >= 0:
    raise NasjaxError(f"noise_std must be a non-negative number; got {noise_std!r}")
  child = child_arch(space, parent, morph, input_shape)
  rng = _host_rng(key)
  out_sel = {}
  if morph.kind == "widen":
    old = plan_network(space, parent, input_shape)[morph.layer].filters
    # Net2WiderNet's random mapping: the first units stay, each new one copies a uniformly drawn old one.
    out_sel[morph.layer] = np.concatenate([np.arange(old), rng.integers(0, old, morph.filters - old)])
  return child, _transfer(space, parent, child, variables, input_shape, out_sel, rng, float(noise_std))


def _pick(space, key, arch, variables, input_shape, kind, layer, **target):
  candidates = [m for m in applicable_morphs(space, arch, input_shape, (kind,))
                if (layer is None or m.layer == layer)
                and all(v is None or getattr(m, k) == v for k, v in target.items())]
  if not candidates:
    where = f" at layer {layer}" if layer is not None else ""
    wanted = "".join(f", {k}={v}" for k, v in target.items() if v is not None)
    raise NasjaxError(f"cannot {kind}{where}{wanted} in {space.to_string(space.check(arch))!r}: "
                      f"{_WHY[kind]}")
  pick_key, apply_key = jax.random.split(key)
  morph = candidates[int(_host_rng(pick_key).integers(len(candidates)))]
  return morph, apply_key


_WHY = {
    "widen": "it needs a conv or dense layer below the space's largest filters value",
    "deepen": "it needs an identity layer with non-negative input whose channel count is a filters value "
              "of the space (and conv, an odd kernel size and stride 1 in the space)",
    "skip": "it needs an unset skip bit from a layer j < k - 1 whose map is no larger than layer k's input",
}


def widen(space: MacroSpace, key: jax.Array, arch: Any, variables: dict, *, input_shape: Any,
          layer: int | None = None, filters: int | None = None, noise_std: float = 0.0):
  """Net2WiderNet on a conv or dense layer (random one and larger ``filters`` value unless given)."""
  morph, key = _pick(space, key, arch, variables, input_shape, "widen", layer, filters=filters)
  return apply_morph(space, key, arch, variables, morph, input_shape=input_shape, noise_std=noise_std)


def deepen(space: MacroSpace, key: jax.Array, arch: Any, variables: dict, *, input_shape: Any,
           layer: int | None = None, kernel: tuple[int, int] | None = None):
  """Net2DeeperNet: an identity layer becomes an identity-initialised conv."""
  morph, key = _pick(space, key, arch, variables, input_shape, "deepen", layer,
                     kernel=None if kernel is None else tuple(kernel))
  return apply_morph(space, key, arch, variables, morph, input_shape=input_shape)


def add_skip(space: MacroSpace, key: jax.Array, arch: Any, variables: dict, *, input_shape: Any,
             layer: int | None = None, source: int | None = None):
  """Sets one skip bit, with zero weights on the new channels."""
  morph, key = _pick(space, key, arch, variables, input_shape, "skip", layer, source=source)
  return apply_morph(space, key, arch, variables, morph, input_shape=input_shape)


def morphism_mutation(space: MacroSpace, key: jax.Array, arch: Any, variables: dict, *, input_shape: Any,
                      kinds=KINDS, noise_std: float = 0.0) -> tuple[np.ndarray, dict, Morph]:
  """A random function-preserving child: a kind drawn uniformly among those of ``kinds`` that apply,
  then one of its concrete transforms uniformly. Returns ``(child_arch, child_variables, morph)``."""
  kinds = _check_kinds(kinds)
  options = applicable_morphs(space, arch, input_shape, kinds)
  available = [k for k in kinds if any(m.kind == k for m in options)]
  if not available:
    raise NasjaxError(f"no network morphism of {kinds} applies to "
                      f"{space.to_string(space.check(arch))!r}: " + "; ".join(_WHY[k] for k in kinds))
  pick_key, apply_key = jax.random.split(key)
  rng = _host_rng(pick_key)
  kind = available[int(rng.integers(len(available)))]
  of_kind = [m for m in options if m.kind == kind]
  morph = of_kind[int(rng.integers(len(of_kind)))]
  child, child_vars = apply_morph(space, apply_key, arch, variables, morph, input_shape=input_shape,
                                  noise_std=noise_std)
  return child, child_vars, morph


# ---------------------------------------------------------------------------------------------- estimator
def morphism_training_config() -> ml_collections.ConfigDict:
  """Short training from scratch (``epochs``) and a shorter fine-tuning of morphed children
  (``finetune_epochs`` at ``finetune_learning_rate``), the two fidelities of NASH-style search."""
  cfg = short_training_config()
  cfg.update(epochs=2, finetune_epochs=1, finetune_learning_rate=0.01, crop_padding=2)
  return cfg


class MorphismEstimator:
  """``estimator(arch, key) -> metrics`` for a MacroSpace that warm-starts children from trained parents.

  Every architecture it trains is archived with its trained variables (at most ``archive_size``, oldest
  dropped). A call for an architecture that one transform of :func:`applicable_morphs` turns an
  archived architecture into (the most recent such parent wins) starts from the morphed parent variables
  and fine-tunes for ``cfg.finetune_epochs``; any other architecture trains from scratch for
  ``cfg.epochs``. :meth:`mutate` proposes such children directly, so a hill climber (NASH) or an
  evolution can use it as its mutation operator.

  **Stateful.** Results depend on which parents were trained before; ``search.run`` does not call the
  estimator for evaluations it replays from its log, so to resume a search with the same warm starts,
  :meth:`save` the archive (e.g. after each call) and :meth:`load` it before the resumed ``search.run``;
  without it, later children whose parent is missing train from scratch (``warm_start: False``).
  """
  jittable = False
  num_fidelities = 1
  name = "morphism"

  def __init__(self, space: MacroSpace, dataset: nasdata.Dataset, cfg=None, *, mesh=None,
               archive_size: int = 64):
    if not isinstance(space, MacroSpace):
      raise NasjaxError(f"MorphismEstimator needs a MacroSpace (macro, nas_rl); got "
                        f"{getattr(space, 'name', type(space).__name__)!r}")
    if isinstance(archive_size, bool) or not isinstance(archive_size, int) or archive_size < 1:
      raise NasjaxError(f"archive_size must be a positive integer; got {archive_size!r}")
    self.space = space
    self.cfg = cfg or morphism_training_config()
    self.data = estimation_splits(dataset, self.cfg)
    self.dataset = dataset
    self.input_shape = dataset.input_shape
    self.mesh = mesh or nasdata.data_mesh()
    self.archive_size = archive_size
    self.archive: dict[tuple[int, ...], dict] = {}

  def network(self, arch) -> ChainNetwork:
    return chain_network(self.space, arch, self.dataset.num_classes, self.input_shape)

  def mutate(self, key: jax.Array, arch, kinds=KINDS) -> np.ndarray:
    """A morphism child of the archived (trained) ``arch``; evaluating it fine-tunes from ``arch``."""
    parent = tuple(int(v) for v in self.space.check(arch))
    if parent not in self.archive:
      raise NasjaxError(f"{self.space.to_string(np.asarray(parent))!r} has not been trained by this "
                        "estimator; evaluate it first")
    child, _, _ = morphism_mutation(self.space, key, np.asarray(parent), self.archive[parent]["variables"],
                                    input_shape=self.input_shape, kinds=kinds)
    return child

  def _warm_start(self, key, arch):
    for parent in reversed(list(self.archive)):
      morph = find_morph(self.space, np.asarray(parent), arch, self.input_shape)
      if morph is not None:
        _, variables = apply_morph(self.space, key, np.asarray(parent), self.archive[parent]["variables"],
                                   morph, input_shape=self.input_shape)
        return parent, morph, variables
    return None, None, None

  def __call__(self, arch, key) -> dict:
    arch = self.space.check(arch)
    t0 = time.perf_counter()
    morph_key, seed_key = jax.random.split(key)
    seed = int(jax.random.randint(seed_key, (), 0, 2**31 - 1))
    parent, morph, variables = self._warm_start(morph_key, arch)
    network = self.network(arch)
    cfg = self.cfg.copy_and_resolve_references()
    cfg.seed = seed
    if variables is None:
      # An rbg key: XLA:CPU compiles threefry initialisers slowly (see nasjax.training.init_key).
      variables = jax.jit(lambda k: init_variables(network, k))(train_init_key(seed))
    else:
      cfg.epochs = cfg.finetune_epochs
      cfg.learning_rate = cfg.finetune_learning_rate
      cfg.min_learning_rate = min(cfg.min_learning_rate, cfg.learning_rate)
    x_tr, y_tr, x_va, y_va = self.data
    state, epoch_fn = make_epoch_fn(chain_model_fn(network), variables, cfg, x_tr, y_tr, x_va, y_va,
                                    mean=self.dataset.mean, std=self.dataset.std, seed=seed, mesh=self.mesh)
    curve = []
    for epoch in range(cfg.epochs):
      state, acc = epoch_fn(state, epoch)
      curve.append(acc)
      if not math.isfinite(acc):
        break
    accuracy = curve[-1] if math.isfinite(curve[-1]) else float("nan")
    if math.isfinite(accuracy):
      arch_key = tuple(int(v) for v in arch)
      self.archive.pop(arch_key, None)  # re-inserted last: the most recent parent is searched first
      self.archive[arch_key] = {"variables": jax.device_get({"params": state["params"],
                                                             "batch_stats": state["batch_stats"]}),
                                "accuracy": accuracy}
      while len(self.archive) > self.archive_size:
        self.archive.pop(next(iter(self.archive)))
    params = sum(int(np.prod(np.shape(v))) for v in jax.tree_util.tree_leaves(variables["params"]))
    return {"accuracy": accuracy, "curve": curve, "epochs": len(curve), "warm_start": parent is not None,
            "parent": None if parent is None else list(parent), "morph": None if morph is None else morph.kind,
            "params": params, "cost_s": time.perf_counter() - t0}

  def save(self, path: str) -> None:
    """Writes the archive (encodings, accuracies, trained variables) as msgpack (no pickle)."""
    # String keys in archive order: msgpack round-trips dicts, and the order decides warm-start priority.
    entries = {str(i): {"arch": np.asarray(a, np.int32), "accuracy": np.float64(e["accuracy"]),
                        "variables": e["variables"]} for i, (a, e) in enumerate(self.archive.items())}
    with open(path, "wb") as f:
      f.write(serialization.msgpack_serialize({"space": self.space.name, "entries": entries}))

  def load(self, path: str) -> None:
    """Replaces the archive by one written by :meth:`save`; each entry is validated against the space."""
    try:
      with open(path, "rb") as f:
        data = serialization.msgpack_restore(f.read())
    except (OSError, ValueError, TypeError) as e:
      raise NasjaxError(f"cannot read a morphism archive from {path}: {e}") from None
    if not isinstance(data, dict) or data.get("space") != self.space.name or not isinstance(
        data.get("entries"), dict):
      raise NasjaxError(f"{path} is not a morphism archive of space {self.space.name!r}")
    archive = {}
    for _, entry in sorted(data["entries"].items(), key=lambda kv: int(kv[0])):
      arch = self.space.check(entry["arch"])
      # msgpack keeps an empty collection (a network without BatchNorm has batch_stats == {}) that a fresh
      # init does not produce; empty collections carry nothing, so they do not count in the comparison.
      variables = {k: v for k, v in entry["variables"].items() if not (isinstance(v, dict) and not v)}
      expected = jax.eval_shape(lambda k, a=arch: init_variables(self.network(a), k), jax.random.key(0))
      expected = {k: v for k, v in expected.items() if not (isinstance(v, dict) and not v)}
      if (jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(variables)
          or any(np.shape(v) != e.shape for v, e in zip(jax.tree_util.tree_leaves(variables),
                                                         jax.tree_util.tree_leaves(expected)))):
        raise NasjaxError(f"{path}: the variables of {self.space.to_string(arch)!r} do not match its network")
      archive[tuple(int(v) for v in arch)] = {"variables": variables, "accuracy": float(entry["accuracy"])}
    self.archive = archive
