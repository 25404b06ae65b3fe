"""The trained discrete network of a ``nasjax train`` directory as a file another runtime loads.

Two formats of the same inference function, ``images -> logits`` for a batch of any size:

* ``stablehlo``: :func:`jax.export.export` serialised (``jax.export.deserialize(data).call(x)`` runs it in
  any JAX of a compatible serialisation version, on the platform it was exported for). The parameters and
  BatchNorm statistics are baked into the program as constants, so the one file is the whole network.
* ``onnx``: an ONNX model written by jax2onnx (``pip install 'nasjax[export]'``), parameters stored as the
  graph's initializers, for onnxruntime and other ONNX runtimes.

The function is the network in inference mode: BatchNorm uses its running statistics (not folded into the
convolutions, so the exported program computes exactly what ``nasjax eval`` computes), no drop-path, no
auxiliary head. Its input is the network's input, i.e. images normalised as in training
(``(x - mean) / std`` of the training data). The StableHLO program writes the ops as nasjax runs them on
the exporting backend (on a CPU, depthwise convolutions as shifted slices: XLA:CPU runs its grouped
convolutions several times slower); the ONNX graph writes them with XLA's own primitives
(:data:`nasjax.nn.ops.XLA_IMPL`: grouped convolutions), the form ONNX has operators for. Every
implementation choice of :class:`~nasjax.nn.ops.Impl` computes the same function of the same parameters.

A ``nasjax train`` of a non-cell space (enas_macro, macro, nas_rl) exports the same way: its network
(:mod:`nasjax.train_macro`) is loaded instead of the cell network, and ONNX writes it in XLA's primitives.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError

FORMATS = ("stablehlo", "onnx")
# Ops whose jax2onnx conversion is checked against nasjax (tests/test_export.py converts each at strides 1
# and 2); a newly registered op joins once it is checked there.
ONNX_OPS = ("skip_connect", "max_pool_3x3", "max_pool_5x5", "max_pool_7x7", "avg_pool_3x3", "sep_conv_3x3",
            "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5", "conv_1x1", "conv_3x3", "conv_5x5",
            "nor_conv_1x1", "nor_conv_3x3", "conv_3x1_1x3", "conv_7x1_1x7")


@dataclasses.dataclass
class TrainedNetwork:
  """A ``nasjax train`` checkpoint loaded for inference (a non-cell space's:
  :class:`nasjax.train_macro.TrainedArchitecture`).

  Attributes:
    genotype: the trained cells (:class:`nasjax.spaces.Genotype`).
    network: the :class:`~nasjax.nn.network.Network` without its auxiliary head, in the implementation
      nasjax runs on this backend.
    variables: ``{"params", "batch_stats"}`` of the newest checkpoint (the auxiliary head left out).
    input_shape: (H, W, C) of the training images.
    num_classes: classifier outputs.
    epoch: epochs the checkpoint had trained.
  """
  genotype: Any
  network: Any
  variables: dict
  input_shape: tuple[int, int, int]
  num_classes: int
  epoch: int

  def forward(self, x, network=None):
    """Logits of the normalised NHWC images ``x`` in inference mode (``network``: another implementation of
    the same network)."""
    return (network or self.network).apply(self.variables, x, train=False)[0]

  def genotype_string(self) -> str:
    return self.genotype.to_string()

  def onnx_network(self):
    """The network written with XLA's own primitives, the form ONNX has operators for; refuses an op whose
    conversion is not checked."""
    from nasjax.nn.ops import XLA_IMPL
    check_onnx_ops(self.genotype)
    return self.network.clone(impl=XLA_IMPL)


def _describe(tree) -> dict:
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in
          jax.tree_util.tree_leaves_with_path(tree)}


def load_trained(checkpoint_dir: str, input_shape: tuple[int, int, int] | None = None) -> TrainedNetwork:
  """The newest checkpoint of a finished ``nasjax train`` directory, checked against its genotype.

  ``input_shape`` (H, W, C) replaces the training images' shape (the network ends in global pooling, so
  another resolution with the same channels runs on the same parameters).
  Raises :class:`NasjaxError` for a directory that is not one, a checkpoint of another genotype or whose
  arrays do not fit the network of its genotype.
  """
  import orbax.checkpoint as ocp

  from nasjax import train
  from nasjax.cli import resolve_genotype
  from nasjax.nn.network import AUX_NAME, Network, abstract_variables
  from nasjax.nn.ops import XLA_IMPL

  result_path = os.path.join(checkpoint_dir, "result.json")
  ckpt_dir = os.path.join(os.path.abspath(checkpoint_dir), "checkpoints")
  if not os.path.isfile(result_path) or not os.path.isdir(ckpt_dir):
    raise NasjaxError(f"{checkpoint_dir} is not a finished `nasjax train` directory (needs result.json and "
                      "checkpoints/)")
  try:
    with open(result_path) as f:
      trained = json.load(f)
    genotype_text, config = trained["genotype"], trained["config"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise NasjaxError(f"{result_path} is not the result of `nasjax train` ({type(e).__name__}: {e})") from None
  if trained.get("command") != "train":
    raise NasjaxError(f"{result_path} is the result of `nasjax {trained.get('command')}`, not `nasjax train`")
  from nasjax import train_macro
  if isinstance(trained.get("space"), str) and train_macro.canonical_space(trained["space"]):
    return train_macro.load_trained(checkpoint_dir, trained, input_shape)
  _, _, genotype = resolve_genotype(genotype_text)
  cfg = train.darts_eval_config()
  cfg.update(config)
  manager = ocp.CheckpointManager(ckpt_dir)
  try:
    step = manager.latest_step()
    if step is None:
      raise NasjaxError(f"no checkpoint in {ckpt_dir}")
    where = os.path.join(ckpt_dir, str(step))
    try:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                               meta=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax raises many types for damaged files.
      raise NasjaxError(f"checkpoint {where} is unreadable ({type(e).__name__}: {str(e)[:200]})") from None
  finally:
    manager.close()
  meta, state = restored["meta"], restored["state"]
  identity = meta.get("identity", {})
  if identity.get("genotype") != genotype.to_string():
    raise NasjaxError(f"checkpoint {where} was trained on genotype {identity.get('genotype')!r}, not on the "
                      f"genotype of {result_path}")
  if input_shape is None:
    shape = trained.get("input_shape") or (identity.get("dataset") or {}).get("input_shape")
    if not shape:
      raise NasjaxError(f"{result_path} does not record the input shape; give --input-shape H,W,C")
    input_shape = tuple(int(d) for d in shape)
  params = {k: v for k, v in state["params"].items() if k != AUX_NAME}
  num_classes = int(np.shape(params.get("classifier", {}).get("kernel", np.zeros((0, 0))))[-1])
  network = Network(genotype, cfg.channels, cfg.layers, max(1, num_classes), auxiliary=False,
                    stem=cfg.get("stem", "cifar"))
  variables = {"params": params, "batch_stats": state.get("batch_stats", {})}
  got = _describe(variables)
  # A run of identical cells trained as one nn.scan (the default on accelerators) stores stacked variables:
  # the checkpoint has one of the two layouts, and the exported network takes the one it has.
  for scan in (False, True):
    try:
      expected = abstract_variables(network.clone(impl=XLA_IMPL, scan_cells=scan), input_shape)
    except NasjaxError:
      raise
    except Exception as e:  # e.g. an input too small for the network's strides
      raise NasjaxError(f"the network of {result_path} cannot take input shape {tuple(input_shape)} "
                        f"({type(e).__name__}: {str(e)[:200]})") from None
    want = {**_describe({"params": expected["params"]}),
            **_describe({"batch_stats": expected.get("batch_stats", {})})}
    if want == got:
      network = network.clone(scan_cells=scan)
      break
    if not scan:
      unrolled = want
  else:
    want = unrolled
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    detail = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else
              f"{shapes[0]} is {got[shapes[0]]} in the checkpoint, {want[shapes[0]]} in the network")
    raise NasjaxError(f"checkpoint {where} does not match the network of its genotype ({cfg.channels} channels, "
                      f"{cfg.layers} cells, input channels {input_shape[-1]}): {detail}")
  variables = jax.tree.map(jnp.asarray, variables)
  return TrainedNetwork(genotype, network, variables, tuple(input_shape), num_classes, int(meta.get("epoch", 0)))


def check_onnx_ops(genotype) -> None:
  """Refuses a genotype with an op whose ONNX conversion is not checked (:data:`ONNX_OPS`), naming it."""
  used = sorted({op for kind in ("normal", "reduce") for op, _ in getattr(genotype, kind)} - set(ONNX_OPS))
  if used:
    raise NasjaxError(f"no checked ONNX conversion for op {', '.join(used)}; the ONNX export supports "
                      f"{', '.join(ONNX_OPS)} (--format stablehlo exports any op)")


def to_stablehlo(trained: TrainedNetwork) -> bytes:
  """The serialised :func:`jax.export.export` of :meth:`TrainedNetwork.forward` for a symbolic batch size,
  the parameters as constants of the program."""
  batch, = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((batch,) + tuple(trained.input_shape), jnp.float32)
  exported = jax.export.export(jax.jit(trained.forward))(spec)
  return bytes(exported.serialize())


def to_onnx(trained: TrainedNetwork) -> bytes:
  """The ONNX model (serialised ``ModelProto``) of :meth:`TrainedNetwork.forward` for a dynamic batch size."""
  onnx_network = trained.onnx_network()
  if importlib.util.find_spec("jax2onnx") is None:
    raise NasjaxError("--format onnx needs jax2onnx and onnx: pip install 'nasjax[export]'")
  from jax2onnx import to_onnx as jax_to_onnx
  try:
    model = jax_to_onnx(lambda x: trained.forward(x, onnx_network), [("batch",) + tuple(trained.input_shape)],
                        model_name="nasjax_network")
  except Exception as e:  # the converter's own errors name the primitive it cannot write
    raise NasjaxError(f"ONNX conversion failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
  # jax2onnx annotates some intermediate values with NHWC shapes where its graph holds NCHW; onnxruntime
  # warns and ignores them. Without the annotations the runtime infers every shape itself.
  model.graph.ClearField("value_info")
  return model.SerializeToString()


def export(checkpoint_dir: str, fmt: str, out: str, *, force: bool = False,
           input_shape: tuple[int, int, int] | None = None) -> dict:
  """Writes the network of ``checkpoint_dir`` to ``out`` in ``fmt``; returns a summary.

  Nothing is written unless the whole export succeeds (the file appears complete or not at all); an
  existing ``out`` is replaced only with ``force``.
  """
  if fmt not in FORMATS:
    raise NasjaxError(f"unknown export format {fmt!r}; accepted: {', '.join(FORMATS)}")
  if os.path.isdir(out):
    raise NasjaxError(f"--out {out} is a directory; give a file name")
  if os.path.exists(out) and not force:
    raise NasjaxError(f"{out} already exists; choose another --out or pass --force to replace it")
  if fmt == "onnx" and importlib.util.find_spec("jax2onnx") is None:
    raise NasjaxError("--format onnx needs jax2onnx and onnx: pip install 'nasjax[export]'")
  trained = load_trained(checkpoint_dir, input_shape)
  data = to_stablehlo(trained) if fmt == "stablehlo" else to_onnx(trained)
  folder = os.path.dirname(os.path.abspath(out))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".export-", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, out)
  except BaseException:
    os.unlink(tmp)
    raise
  from nasjax.nn.count import count_params
  return {"command": "export", "format": fmt, "out": out, "bytes": len(data), "genotype": trained.genotype_string(),
          "input_shape": ["batch", *trained.input_shape], "classes": trained.num_classes,
          "params": count_params(trained.variables["params"]), "checkpoint_epoch": trained.epoch,
          "input": "images normalised as in training: (x - mean) / std of the training data",
          "batchnorm": "inference mode (running statistics), not folded"}
