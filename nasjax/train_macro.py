"""Retraining the architectures of the non-cell spaces (ENAS macro, the chain macro space, NAS-RL) on the
training engine, under the protocol settings of :mod:`nasjax.train`, and what eval, info and export read.

The networks:

* ``enas_macro``: the stand-alone child of an ENAS macro architecture (Pham et al., "Efficient Neural
  Architecture Search via Parameter Sharing", ICML 2018, section 2.3):
  :class:`~nasjax.nn.enas_macro_network.EnasMacroNetwork` with ``fixed_arch`` and ``double_channels=True``,
  as the authors' stand-alone child doubles its channels at each reduction. Only the chosen ops'
  parameters exist (each layer owns one op), so the parameter count, the optimizer state, the checkpoints
  and the export hold the child alone. Skips are summed and normalised as in the shared network (the
  authors' child concatenates them and applies a 1x1 convolution); the names match the shared network's,
  so a child's parameters are a subset of the search's shared weights.
* ``macro``, ``nas_rl`` and ``nas_rl_strided``: :class:`~nasjax.nn.chain_network.ChainNetwork` (Zoph & Le, "Neural
  Architecture Search with Reinforcement Learning", ICLR 2017, section 3.3), whose widths are the
  architecture's filter counts and whose layer shapes are planned for one input shape.

The protocol (epochs, batch, learning-rate schedule, weight decay, clipping, crop, flip, cutout, seed,
checkpoints) is :func:`nasjax.train.darts_eval_config` or its demo. Neither network has drop-path, an
auxiliary head or a choice of stem, and the depth is the architecture's: those settings are left out of
the recorded config (``drop_path`` stays, at 0, since the epoch loop reads it) and an option that would
change them is refused. The chain networks' widths are the architecture's too, so ``channels`` goes as well.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nasjax import data as nasdata
from nasjax.errors import NasjaxError
from nasjax.export import TrainedNetwork
from nasjax.training import FitResult, evaluate, fit, init_state, make_eval_step, make_optimizer, plain_model_fn

SPACES = ("enas_macro", "macro", "nas_rl", "nas_rl_strided")
# Settings of the cell protocol these networks have no part for, and the value that means "none of it".
_CELL_ONLY = {"drop_path": 0.0, "auxiliary": False, "auxiliary_weight": None, "stem": "cifar", "layers": None}
_WHY = {"drop_path": "it has no drop-path", "auxiliary": "it has no auxiliary head",
        "auxiliary_weight": "it has no auxiliary head", "stem": "it has its own stem",
        "layers": "its depth is the architecture's", "channels": "its widths are the architecture's filter counts"}


def canonical_space(name: str) -> str | None:
  """The registry name of ``name`` when it is one of :data:`SPACES`, else None (other spaces' names and
  unknown names alike; :func:`nasjax.spaces.get_space` judges those)."""
  key = str(name).strip().lower().replace("-", "_")
  key = {"nasrl": "nas_rl", "nasrl_strided": "nas_rl_strided"}.get(key, key)
  return key if key in SPACES else None


def _spaces_for(name: str, num_layers: int) -> list:
  from nasjax.spaces import EnasMacroSpace, macro_space, nas_rl_space
  if name == "enas_macro":
    return [EnasMacroSpace(num_layers)]
  if name == "nas_rl":
    # A string in the strided notation (sh, sw) is of the strided space: result files written before it had
    # its own name (nas_rl_strided) recorded its architectures as nas_rl.
    return [nas_rl_space(num_layers), nas_rl_space(num_layers, with_strides=True)]
  if name == "nas_rl_strided":
    return [nas_rl_space(num_layers, with_strides=True)]
  return [macro_space(num_layers)]


def parse_architecture(space_name: str, text: Any):
  """``(space, arch)`` of an architecture string of ``space_name`` (one of :data:`SPACES`): the layer count
  is the string's, so any depth the space allows is accepted. A string of another space is refused in one
  line naming the space."""
  name = canonical_space(space_name)
  if name is None:
    raise NasjaxError(f"{space_name!r} is not one of the non-cell spaces {', '.join(SPACES)}")
  if not isinstance(text, str) or not text.strip():
    raise NasjaxError(f"an architecture of the {name} space is a string of '|'-separated layers; got {text!r}")
  first = None
  for space in _spaces_for(name, len(text.split("|"))):
    try:
      return space, np.asarray(space.from_string(text), np.int32)
    except NasjaxError as e:
      first = first or e
  raise NasjaxError(f"--genotype is not an architecture of the {name} space: {first}")


def protocol_config(cfg, space, given: dict) -> ml_collections.ConfigDict:
  """``cfg`` (the cell protocol with the command line's ``given`` options set) for ``space``'s network:
  the settings it has no part for are refused when ``given`` changes them and left out otherwise."""
  drop = dict(_CELL_ONLY)
  if space.name != "enas_macro":
    drop["channels"] = None
  for key, neutral in drop.items():
    value = given.get(key)
    if key in given and not (value == neutral or (key == "layers" and value == space.num_layers)):
      why = _WHY[key] + (f" ({space.num_layers} layers)" if key == "layers" else "")
      raise NasjaxError(f"--{key.replace('_', '-')} does not apply to the {space.name} network: {why}; leave the "
                        "option out")
  settings = {k: v for k, v in cfg.to_dict().items() if k not in drop or k == "drop_path"}
  settings["drop_path"] = 0.0
  return ml_collections.ConfigDict(settings)


@dataclasses.dataclass(frozen=True)
class StandAlone:
  """The network of one architecture of a non-cell space, for ``num_classes`` outputs on ``input_shape``
  (H, W, C) images: called as ``module.apply(variables, x, train=...)``, returning logits."""
  space: Any
  arch: tuple[int, ...]
  module: Any
  input_shape: tuple[int, int, int]
  num_classes: int

  @property
  def genotype(self) -> str:
    return self.space.to_string(np.asarray(self.arch, np.int32))

  def init(self, key) -> dict:
    """``{"params", "batch_stats"}`` of the network (a two-image dummy batch)."""
    sample = jnp.zeros((2,) + self.input_shape, jnp.float32)
    return self.module.init({"params": key, "dropout": key}, sample, train=False)

  def model_fn(self):
    """The training engine's ``model_fn`` (no auxiliary head, no drop-path)."""
    return plain_model_fn(self.module)

  def forward(self, variables: dict, x) -> jax.Array:
    """Logits of normalised NHWC images in inference mode."""
    return self.module.apply(variables, x, train=False)

  def count(self) -> dict:
    """``params`` (every parameter: there is no auxiliary head to leave out) and ``macs`` (multiply-adds of
    convolutions and dense layers for one image), from shapes alone."""
    from nasjax.nn.count import count_macs, count_params
    variables = jax.eval_shape(self.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1,) + self.input_shape, jnp.float32)
    return {"params": count_params(variables["params"], exclude=()), "macs": count_macs(self.forward, variables, x)}


def build(space, arch, num_classes: int, input_shape, channels: int | None = None) -> StandAlone:
  """The stand-alone network of ``arch`` (validated); ``channels`` is the ENAS child's initial width (the
  chain networks' widths are the architecture's)."""
  arch = tuple(int(v) for v in space.check(arch))
  shape = tuple(int(d) for d in input_shape)
  if space.name == "enas_macro":
    from nasjax.nn.enas_macro_network import EnasMacroNetwork
    if channels is None:
      raise NasjaxError("the enas_macro stand-alone network needs its channel count (--channels)")
    module = EnasMacroNetwork.for_space(space, channels=int(channels), num_classes=int(num_classes),
                                        double_channels=True, fixed_arch=arch)
    module._check_sizes()  # an odd width is refused here, before anything is traced
  else:
    from nasjax.nn.chain_network import chain_network
    module = chain_network(space, arch, int(num_classes), shape)
  return StandAlone(space, arch, module, shape, int(num_classes))


def for_dataset(space, arch, dataset: nasdata.Dataset, cfg) -> StandAlone:
  return build(space, arch, dataset.num_classes, dataset.input_shape, cfg.get("channels"))


def train_architecture(net: StandAlone, dataset: nasdata.Dataset, cfg, workdir: str | None = None,
                       show_progress: bool = True, identity: dict | None = None,
                       stop_after_epochs: int | None = None, stop_after_steps: int | None = None) -> FitResult:
  """Trains ``net`` on ``dataset`` (test split as the evaluation set) under ``cfg``, as
  :func:`nasjax.train.train_genotype` trains a cell network: checkpoints carry ``identity`` and the data's
  fingerprint, and a rerun resumes exactly (inside an epoch too, with ``checkpoint_every_steps``)."""
  x_train, y_train = dataset.x_train, dataset.y_train
  if cfg.train_subset:
    x_train, y_train = nasdata.subset(x_train, y_train, cfg.train_subset, cfg.seed)
  return fit(net.model_fn(), net.init, cfg, x_train, y_train, dataset.x_test, dataset.y_test,
             mean=dataset.mean, std=dataset.std, workdir=workdir,
             identity=dict(identity or {}, dataset=dataset.fingerprint), show_progress=show_progress,
             stop_after_epochs=stop_after_epochs, stop_after_steps=stop_after_steps)


def restore(checkpoint_dir: str, net: StandAlone, identity: dict, cfg):
  """``(state, meta)`` of the newest checkpoint of a ``nasjax train`` of ``net`` (the training data's
  fingerprint is not compared: evaluating on other data is allowed)."""
  from nasjax.utils import checkpoint as ckpt
  checkpoints = os.path.join(os.path.abspath(checkpoint_dir), "checkpoints")
  if not os.path.isdir(checkpoints) or not os.listdir(checkpoints):
    raise NasjaxError(f"no checkpoint in {checkpoint_dir}/checkpoints (was the training's folder moved or cleaned?)")
  # The optimizer state's structure does not depend on the schedule's length.
  template = init_state(net.init, make_optimizer(cfg, 1), cfg.seed)
  manager = ckpt.Manager(checkpoints)
  try:
    restored = manager.restore_latest(template, identity, ignore=("dataset", "data"))
  finally:  # a refused restore too: no Orbax thread may be left to print at shutdown
    manager.close()
  if restored is None:
    raise NasjaxError(f"no checkpoint in {checkpoint_dir}/checkpoints")
  return restored


def evaluate_checkpoint(checkpoint_dir: str, net: StandAlone, identity: dict, cfg,
                        dataset: nasdata.Dataset) -> tuple[dict, int]:
  """Test loss and accuracy of the newest checkpoint on ``dataset``'s test split, and its epoch."""
  state, meta = restore(checkpoint_dir, net, identity, cfg)
  mesh = nasdata.data_mesh()
  eval_step = make_eval_step(net.model_fn(), dataset.mean, dataset.std)
  metrics = evaluate(eval_step, nasdata.replicate(state, mesh), dataset.x_test, dataset.y_test,
                     cfg.eval_batch_size, mesh)
  return metrics, int(meta["epoch"])


def load_trained(checkpoint_dir: str, trained: dict, input_shape=None):
  """The newest checkpoint of a ``nasjax train`` of a non-cell architecture (``trained`` is its
  ``result.json``) as a :class:`nasjax.export.TrainedNetwork` for export. ``input_shape`` replaces the
  training images' (H, W, C): any height and width for the ENAS child (it ends in global pooling); the
  chain networks' shapes are planned for one input, so theirs must be the training shape."""
  space, arch = parse_architecture(trained.get("space"), trained.get("genotype"))
  cfg = ml_collections.ConfigDict(trained.get("config") or {})
  train_shape = tuple(int(d) for d in trained.get("input_shape") or ())
  classes = trained.get("classes")
  if len(train_shape) != 3 or not isinstance(classes, int):
    raise NasjaxError(f"{checkpoint_dir}/result.json does not record input_shape and classes; was it edited? "
                      "(rerun `nasjax train`)")
  shape = tuple(int(d) for d in (input_shape or train_shape))
  if space.name != "enas_macro" and shape != train_shape:
    raise NasjaxError(f"the {space.name} network is planned for its training images {train_shape}; "
                      f"--input-shape {shape} cannot run on it (leave the option out)")
  if shape[-1] != train_shape[-1]:
    raise NasjaxError(f"--input-shape {shape} has {shape[-1]} channels; the network was trained on {train_shape[-1]}")
  net = build(space, arch, classes, shape, cfg.get("channels"))
  identity = {"space": space.name, "genotype": net.genotype, "config": trained.get("config")}
  state, meta = restore(checkpoint_dir, net, identity, cfg)
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  return TrainedArchitecture(net.genotype, net.module, jax.tree.map(jnp.asarray, variables), shape, classes,
                             int(meta.get("epoch", 0)))



class TrainedArchitecture(TrainedNetwork):
  """A trained non-cell network for export: ``genotype`` is the space's string; the module returns logits."""

  def forward(self, x, network=None):
    return (network or self.network).apply(self.variables, x, train=False)

  def genotype_string(self) -> str:
    return self.genotype

  def onnx_network(self):
    """The network in XLA's own primitives (the ENAS child's impl; the chain networks use them already)."""
    from nasjax.nn.ops import XLA_IMPL
    return self.network.clone(impl=XLA_IMPL) if hasattr(self.network, "impl") else self.network
