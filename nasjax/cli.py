"""The ``nasjax`` command: search, train, eval, info, export. Kept thin; the work is in the library.

``nasjax search`` with no arguments runs the embedded demo: random search over DARTS cells, each candidate
trained briefly on the bundled Fashion-MNIST subset. A discrete search is ``--space`` x ``--strategy``
(:mod:`nasjax.strategies`) x ``--estimator`` (:mod:`nasjax.estimators.registry`, which also says which
combinations work) x ``--executor``; ``--method`` runs a one-shot method (:mod:`nasjax.oneshot`). Settings
come from one mechanism: every key of the command's config is an option (:mod:`nasjax.utils.config_args`).
Every command writes ``--out DIR/result.json`` and never overwrites a finished result; user mistakes print
one ``error:`` line and exit with status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

from nasjax.errors import NasjaxError
from nasjax.utils.stages import write_json_atomic


def _versions() -> dict:
  import flax
  import jax
  import optax
  import nasjax
  return {"nasjax": nasjax.__version__, "jax": jax.__version__, "flax": flax.__version__,
          "optax": optax.__version__, "python": platform.python_version(),
          "backend": jax.default_backend(), "devices": jax.device_count(),
          "processes": jax.process_count()}


def _check_out(out: str, force: bool = False, resumable: bool = False) -> str:
  """Checks ``--out`` before any work (writable, no finished result, empty unless resumable); writes nothing."""
  from nasjax.utils.validation import check_out_dir
  check_out_dir(out)
  path = os.path.join(out, "result.json")
  if os.path.exists(path) and not force:
    raise NasjaxError(f"{path} already exists (a finished run); choose another --out directory or pass "
                      "--force to replace the result file (checkpoints and logs are kept)")
  if os.path.exists(out) and not os.path.isdir(out):
    raise NasjaxError(f"--out {out} exists and is not a directory")
  if not resumable and os.path.isdir(out) and os.listdir(out) and not force:
    raise NasjaxError(f"--out {out} is not empty; choose another directory or pass --force")
  return path


def _prepare_out(out: str, force: bool = False, resumable: bool = False) -> str:
  path = _check_out(out, force, resumable)
  try:
    os.makedirs(out, exist_ok=True)
  except OSError as e:  # checked already; another process may have changed the folder since
    raise NasjaxError(f"--out {out} cannot be created: {e.strerror or e}") from None
  return path


def _write_result(path: str, result: dict) -> None:
  result = dict(result, versions=_versions(), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
  write_json_atomic(path, result, indent=2, default=float)


def resolve_genotype(spec: str):
  """NAME (published), a genotype string in DARTS notation, or a JSON file (genotype or result.json).

  Returns ``(space, arch, genotype)``; the genotype is validated by the first cell space that accepts it.
  """
  from nasjax import spaces
  if spec is None:
    raise NasjaxError("--genotype is required: a published name (" + ", ".join(spaces.GENOTYPES) +
                      "), a genotype string, or a .json file")
  text = spec
  if spec.endswith(".json"):
    if not os.path.exists(spec):
      raise NasjaxError(f"genotype file {spec} does not exist")
    data = _read_json_file(spec, "genotype file")
    if isinstance(data, dict) and isinstance(data.get("genotype"), str):
      text = data["genotype"]
    elif isinstance(data, dict) and "normal" in data:
      try:
        genotype = spaces.Genotype.from_json(data)
      except NasjaxError as e:
        raise NasjaxError(f"genotype file {spec}: {e}") from None
      text = genotype.to_string()
    else:
      raise NasjaxError(f"{spec} holds neither a genotype (keys normal, normal_concat, reduce, "
                        "reduce_concat) nor a result.json with a 'genotype' string")
  elif "(" not in spec and "[" not in spec:
    space_name, genotype = spaces.lookup_genotype(spec)
    space = spaces.get_space(space_name)
    return space, space.encode(genotype), genotype
  spaces.Genotype.from_string(text)  # syntax errors are reported once, not once per space
  errors = []
  for name in ("darts", "nasnet", "enas_micro"):
    space = spaces.get_space(name)
    try:
      arch = space.from_string(text)
    except NasjaxError as e:
      errors.append(f"{name}: {e}")
      continue
    return space, arch, space.decode(arch)
  raise NasjaxError("the genotype is not valid in any cell space:\n  " + "\n  ".join(errors))


def _read_json_file(path: str, what: str):
  """The JSON value in ``path``; any problem (unreadable, not UTF-8, not JSON, nested too deeply) is one
  :class:`NasjaxError` naming ``what`` and the path."""
  if os.path.isdir(path):
    raise NasjaxError(f"{what} {path} is a directory, not a JSON file")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except OSError as e:
    raise NasjaxError(f"{what} {path} cannot be read: {e.strerror or e}") from None
  except UnicodeDecodeError as e:
    raise NasjaxError(f"{what} {path} is not valid JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise NasjaxError(f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}; "
                      "truncated?)") from None
  except RecursionError:
    raise NasjaxError(f"{what} {path} is nested too deeply to be a nasjax file") from None


def _parse_shape(text: str) -> tuple[int, ...]:
  try:
    shape = tuple(int(v) for v in text.replace("x", ",").split(","))
  except ValueError:
    raise NasjaxError(f"--input-shape must be H,W,C (e.g. 32,32,3), got {text!r}") from None
  if len(shape) != 3 or min(shape) < 1:
    raise NasjaxError(f"--input-shape must be three positive integers H,W,C, got {text!r}")
  return shape


def cmd_info(args) -> dict:
  import jax.numpy as jnp
  from nasjax.nn.count import count_macs, count_params
  from nasjax.nn.network import AUX_NAME, Network, abstract_variables
  from nasjax.nn.ops import XLA_IMPL
  from nasjax.utils import validation
  macro = _macro_target(args.genotype, args.space)
  if macro is not None:
    return _cmd_info_macro(args, *macro)
  args.channels = 36 if args.channels is None else args.channels
  args.layers = 20 if args.layers is None else args.layers
  args.auxiliary = True if args.auxiliary is None else args.auxiliary
  args.stem = "cifar" if args.stem is None else args.stem
  validation.positive_int(args.channels, "--channels")
  validation.positive_int(args.layers, "--layers")
  validation.num_classes(args.classes, "--classes")
  shape = _parse_shape(args.input_shape)
  _check_stem(args.stem)
  _check_network_fits(args.channels, args.layers, shape, 1, args.classes, args.stem, train=False,
                      what=f"nasjax info of {args.layers} cells of {args.channels} channels on {args.input_shape}")
  space, arch, genotype = _cell_genotype(args.genotype, args.space)
  net = Network(genotype, args.channels, args.layers, args.classes, auxiliary=args.auxiliary,
                stem=args.stem, impl=XLA_IMPL, scan_cells=False)
  x = jnp.zeros((1,) + shape)
  variables = abstract_variables(net, shape)
  # The auxiliary head only trains; an inference pass (what the papers' multiply-adds count) skips it.
  deployed = net.clone(auxiliary=False)
  macs = count_macs(lambda v, x: deployed.apply(v, x)[0], {**variables, "params": {
      k: v for k, v in variables["params"].items() if k != AUX_NAME}}, x)
  return {"command": "info", "space": space.name, "genotype": genotype.to_string(),
          "arch": [int(v) for v in arch], "channels": args.channels, "layers": args.layers,
          "auxiliary": args.auxiliary, "stem": args.stem, "input_shape": list(shape), "classes": args.classes,
          "params": count_params(variables["params"]),
          "params_total": count_params(variables["params"], exclude=()),
          "macs": macs, "flops": 2 * macs,
          "note": "params and macs leave the auxiliary head out (it only trains), as the papers count; macs "
                  "are multiply-adds of convolutions and dense layers for one image (papers' 'FLOPs' "
                  "usually mean these); flops = 2 * macs"}


def _check_network_fits(channels, layers, input_shape, batch, classes, stem="cifar", *, train=True, edges=8,
                        steps=4, what="the network") -> None:
  """Refuses a network whose lower memory estimate exceeds the memory available (instead of hanging in
  tracing or failing in XLA with RESOURCE_EXHAUSTED after minutes)."""
  from nasjax.utils import validation
  h, w, c = input_shape
  if stem == "imagenet":  # three stride-2 convolutions before the first cell
    h, w = max(1, h // 8), max(1, w // 8)
  need = validation.cell_network_bytes(channels, layers, (h, w, c), batch, classes, train=train, edges=edges,
                                       steps=steps)
  validation.check_fits(need, what, "use fewer or smaller cells, a smaller batch (--batch-size) or smaller images")


def cmd_export(args) -> dict:
  from nasjax import export
  shape = _parse_shape(args.input_shape) if args.input_shape else None
  return export.export(args.checkpoint, args.format, args.out, force=args.force, input_shape=shape)


def _check_stem(stem: str) -> None:
  from nasjax.nn.network import STEMS
  if stem not in STEMS:
    raise NasjaxError(f"unknown stem {stem!r}; accepted: {', '.join(STEMS)}")


def _overrides(cfg, args, what: str):
  """Sets the options the command line gave for keys of ``cfg`` (every key is an option; see
  :mod:`nasjax.utils.config_args`)."""
  from nasjax.utils.config_args import apply_overrides
  apply_overrides(cfg, getattr(args, "overrides", []), what=what)
  return cfg


def _train_config(args):
  from nasjax import train
  cfg = train.demo_config() if args.config == "demo" else train.darts_eval_config()
  return _overrides(cfg, args, f"nasjax train --config {args.config}")


def cmd_train(args) -> dict:
  from nasjax import data, train
  macro = _macro_target(args.genotype, args.space)
  if macro is not None:
    return _cmd_train_macro(args, *macro)
  cfg = _train_config(args)
  if args.show_config:
    return _show_config(cfg)
  from nasjax.utils.validation import check_settings
  check_settings(cfg)
  space, arch, genotype = _cell_genotype(args.genotype, args.space)
  _check_stem(cfg.stem)
  _check_out(args.out, args.force, resumable=True)
  dataset = data.load_dataset(args.data, args.data_dir)
  _check_network_fits(cfg.channels, cfg.layers, dataset.input_shape, cfg.batch_size, dataset.num_classes, cfg.stem,
                      what=f"nasjax train of {cfg.layers} cells of {cfg.channels} channels, batch {cfg.batch_size}")
  result_path = _prepare_out(args.out, args.force, resumable=True)
  # train_genotype adds the data's content fingerprint: the same file by another path still resumes.
  identity = {"genotype": genotype.to_string(), "config": train.config_to_dict(cfg)}
  fit = train.train_genotype(genotype, dataset, cfg, workdir=args.out, show_progress=not args.quiet,
                             identity=identity)
  return {"command": "train", "method": "retrain", "space": space.name, "genotype": genotype.to_string(),
          "arch": [int(v) for v in arch], "data": args.data, "input_shape": list(dataset.input_shape),
          "classes": dataset.num_classes, "seed": cfg.seed,
          "config": train.config_to_dict(cfg), "metrics": fit.final, "history": fit.history,
          "_result_path": result_path}


def cmd_eval(args) -> dict:
  import jax.numpy as jnp
  from nasjax import data, train
  from nasjax.nn.network import Network
  from nasjax.utils import checkpoint as ckpt
  _check_out(args.out, args.force)
  trained = _read_train_result(args.checkpoint)
  from nasjax import train_macro
  if isinstance(trained.get("space"), str) and train_macro.canonical_space(trained["space"]):
    return _cmd_eval_macro(args, trained)
  space, arch, genotype = resolve_genotype(trained["genotype"])
  cfg = train.darts_eval_config()
  try:
    cfg.update(trained["config"])
  except (TypeError, ValueError, AttributeError, KeyError) as e:
    raise NasjaxError(f"{args.checkpoint}/result.json has a config that is not this version's train settings "
                      f"({e})") from None
  from nasjax.utils.validation import check_settings
  check_settings(cfg)
  _check_stem(cfg.stem)
  checkpoints = os.path.join(os.path.abspath(args.checkpoint), "checkpoints")
  if not os.path.isdir(checkpoints) or not os.listdir(checkpoints):
    raise NasjaxError(f"no checkpoint in {args.checkpoint}/checkpoints (was the training's folder moved or cleaned?)")
  dataset = data.load_dataset(args.data or trained["data"], args.data_dir)
  _check_network_fits(cfg.channels, cfg.layers, dataset.input_shape, cfg.eval_batch_size, dataset.num_classes,
                      cfg.stem, train=False, what=f"nasjax eval of {cfg.layers} cells of {cfg.channels} channels")
  result_path = _prepare_out(args.out, args.force)
  network = Network(genotype, cfg.channels, cfg.layers, dataset.num_classes, auxiliary=cfg.auxiliary,
                    stem=cfg.stem)
  sample = jnp.zeros((2,) + dataset.input_shape, jnp.float32)
  batcher = data.Batcher(dataset.x_train, dataset.y_train, cfg.batch_size, seed=cfg.seed)
  tx = train.make_optimizer(cfg, batcher.steps_per_epoch)
  template = train.init_state(lambda k: network.init({"params": k, "dropout": k}, sample), tx, cfg.seed)
  manager = ckpt.Manager(checkpoints)
  # Evaluating on other data (--data) is allowed, so the training data is not compared: neither its
  # fingerprint nor the path that checkpoints written before the fingerprint recorded.
  identity = {"genotype": genotype.to_string(), "config": trained["config"]}
  try:
    restored = manager.restore_latest(template, identity, ignore=("dataset", "data"))
  finally:  # a refused restore too: no Orbax thread may be left to print at shutdown
    manager.close()
  if restored is None:
    raise NasjaxError(f"no checkpoint in {args.checkpoint}/checkpoints")
  state, meta = restored
  mesh = data.data_mesh()
  eval_step = train.make_eval_step(train.network_model_fn(network), dataset.mean, dataset.std)
  metrics = train.evaluate(eval_step, data.replicate(state, mesh), dataset.x_test, dataset.y_test,
                           cfg.eval_batch_size, mesh)
  return {"command": "eval", "method": "eval", "space": space.name, "genotype": genotype.to_string(),
          "arch": [int(v) for v in arch], "data": args.data or trained["data"], "seed": cfg.seed,
          "checkpoint_epoch": meta["epoch"], "metrics": {"test_" + k: v for k, v in metrics.items()},
          "_result_path": result_path}


def _read_train_result(directory: str) -> dict:
  """The ``result.json`` of a finished ``nasjax train`` in ``directory``, with the fields eval reads checked."""
  if not os.path.isdir(directory):
    raise NasjaxError(f"--checkpoint {directory} does not exist or is not a directory; give the --out folder of a "
                      "finished `nasjax train`")
  source = os.path.join(directory, "result.json")
  if not os.path.exists(source):
    raise NasjaxError(f"{directory} is not a finished `nasjax train` directory (no result.json)")
  trained = _read_json_file(source, "result file")
  if not isinstance(trained, dict) or trained.get("command") != "train":
    by = trained.get("command") if isinstance(trained, dict) else None
    raise NasjaxError(f"{source} was written by " + (f"`nasjax {by}`" if isinstance(by, str) else "something else")
                      + ", not by `nasjax train`; eval reads the folder of a finished `nasjax train`")
  for key, kind, what in (("genotype", str, "a genotype string"), ("config", dict, "the settings (an object)"),
                          ("data", str, "the data spec")):
    if not isinstance(trained.get(key), kind):
      raise NasjaxError(f"{source} has no {key} field holding {what}; was it edited? (rerun `nasjax train`)")
  return trained


# ---- the non-cell spaces (enas_macro, macro, nas_rl, nas_rl_strided): their own networks on the same engine
# (nasjax.train_macro)

_MACRO_SPACES = ("enas_macro", "macro", "nas_rl", "nas_rl_strided")
_CELL_SPACES = ("darts", "nasnet", "enas_micro")
_TRAINABLE = ", ".join(_CELL_SPACES + _MACRO_SPACES)


def _trainable_space(name, where: str) -> str:
  """The registry name of ``name`` if nasjax trains its networks; unknown and other spaces are refused."""
  from nasjax import spaces
  space = spaces.get_space(name)  # an unknown name is refused with the accepted ones
  if space.name not in _CELL_SPACES + _MACRO_SPACES:
    raise NasjaxError(f"{where} names space {space.name!r}; nasjax train, eval and info build networks for "
                      f"{_TRAINABLE}")
  return space.name


def _macro_target(spec, space_name):
  """``(space, arch)`` when ``--genotype`` (with ``--space``) is an architecture of a non-cell space; None for
  a cell genotype (then :func:`_cell_genotype` reads it). A result.json of another command, a space given
  twice and differently, or a '|' string without ``--space`` are refused in one line."""
  from nasjax import train_macro
  given = None if space_name is None else _trainable_space(space_name, f"--space {space_name}")
  if isinstance(spec, str) and spec.endswith(".json") and os.path.isfile(spec):
    found = _read_json_file(spec, "genotype file")
    if not isinstance(found, dict):
      return None
    command = found.get("command")
    if command is not None and command not in ("search", "train"):
      raise NasjaxError(f"{spec} was written by `nasjax {command}`; --genotype reads the result.json of "
                        "`nasjax search` or `nasjax train`")
    if found.get("space") is None:
      return None
    stored = _trainable_space(found["space"], f"{spec}")
    if given is not None and given != stored:
      raise NasjaxError(f"--space {space_name} disagrees with {spec}, whose architecture is of space {stored}")
    if stored not in _MACRO_SPACES:
      return None
    if not isinstance(found.get("genotype"), str):
      raise NasjaxError(f"{spec} has no genotype string; was it edited? (rerun the search)")
    return train_macro.parse_architecture(stored, found["genotype"])
  if given in _MACRO_SPACES:
    if isinstance(spec, str) and spec.endswith(".json"):
      raise NasjaxError(f"genotype file {spec} does not exist")
    return train_macro.parse_architecture(given, spec)
  if given is None and isinstance(spec, str) and "|" in spec and "(" not in spec:
    raise NasjaxError(f"--genotype {spec!r} is in the '|' notation of the spaces {', '.join(_MACRO_SPACES)}; "
                      "say which with --space NAME")
  return None


def _cell_genotype(spec, space_name):
  """:func:`resolve_genotype`, in the cell space ``--space`` names when it is given."""
  space, arch, genotype = resolve_genotype(spec)
  if space_name is None:
    return space, arch, genotype
  from nasjax import spaces
  wanted = spaces.get_space(space_name)
  if wanted.name != space.name:
    arch = wanted.from_string(genotype.to_string())
    space, genotype = wanted, wanted.decode(arch)
  return space, arch, genotype


def _macro_width(space, cfg_channels) -> int:
  """The width of the memory estimate: the ENAS child's initial channels, a chain's widest layer."""
  return int(cfg_channels) if space.name == "enas_macro" else max(getattr(space, "filters", (64,)))


def _cmd_train_macro(args, space, arch) -> dict:
  from nasjax import data, train, train_macro
  from nasjax.utils.config_args import apply_overrides
  from nasjax.utils.validation import check_settings
  cfg = train.demo_config() if args.config == "demo" else train.darts_eval_config()
  given = apply_overrides(cfg, getattr(args, "overrides", []), what=f"nasjax train --space {space.name}")
  cfg = train_macro.protocol_config(cfg, space, given)
  if args.show_config:
    return _show_config(cfg)
  check_settings(cfg)
  _check_out(args.out, args.force, resumable=True)
  dataset = data.load_dataset(args.data, args.data_dir)
  net = train_macro.for_dataset(space, arch, dataset, cfg)
  _check_network_fits(_macro_width(space, cfg.get("channels")), space.num_layers, dataset.input_shape,
                      cfg.batch_size, dataset.num_classes, edges=1, steps=0,
                      what=f"nasjax train of the {space.name} network of {space.num_layers} layers, batch "
                           f"{cfg.batch_size}")
  result_path = _prepare_out(args.out, args.force, resumable=True)
  # train_architecture adds the data's content fingerprint: the same file by another path still resumes.
  identity = {"space": space.name, "genotype": net.genotype, "config": train.config_to_dict(cfg)}
  fit = train_macro.train_architecture(net, dataset, cfg, workdir=args.out, show_progress=not args.quiet,
                                       identity=identity)
  return {"command": "train", "method": "retrain", "space": space.name, "genotype": net.genotype,
          "arch": list(net.arch), "num_layers": space.num_layers, "data": args.data,
          "input_shape": list(dataset.input_shape), "classes": dataset.num_classes, "seed": cfg.seed,
          "config": train.config_to_dict(cfg), **net.count(), "metrics": fit.final, "history": fit.history,
          "_result_path": result_path}


def _cmd_eval_macro(args, trained: dict) -> dict:
  import ml_collections
  from nasjax import data, train_macro
  from nasjax.utils.validation import check_settings
  space, arch = train_macro.parse_architecture(trained["space"], trained["genotype"])
  cfg = ml_collections.ConfigDict(trained["config"])
  check_settings(cfg)
  for key in ("batch_size", "eval_batch_size", "seed", "epochs", "learning_rate"):
    if key not in cfg:
      raise NasjaxError(f"{args.checkpoint}/result.json has no {key} in its config; was it edited? (rerun "
                        "`nasjax train`)")
  dataset = data.load_dataset(args.data or trained["data"], args.data_dir)
  net = train_macro.for_dataset(space, arch, dataset, cfg)
  result_path = _prepare_out(args.out, args.force)
  identity = {"space": space.name, "genotype": net.genotype, "config": trained["config"]}
  metrics, epoch = train_macro.evaluate_checkpoint(args.checkpoint, net, identity, cfg, dataset)
  return {"command": "eval", "method": "eval", "space": space.name, "genotype": net.genotype,
          "arch": list(net.arch), "data": args.data or trained["data"], "seed": cfg.seed,
          "checkpoint_epoch": epoch, "metrics": {"test_" + k: v for k, v in metrics.items()},
          "_result_path": result_path}


def _cmd_info_macro(args, space, arch) -> dict:
  from nasjax import train_macro
  from nasjax.utils import validation
  refused = [("--layers", args.layers is not None and args.layers != space.num_layers,
              f"its depth is the architecture's ({space.num_layers} layers)"),
             ("--auxiliary", bool(args.auxiliary), "it has no auxiliary head"),
             ("--stem", args.stem not in (None, "cifar"), "it has its own stem"),
             ("--channels", space.name != "enas_macro" and args.channels is not None,
              "its widths are the architecture's filter counts")]
  for option, bad, why in refused:
    if bad:
      raise NasjaxError(f"{option} does not apply to the {space.name} network: {why}; leave it out")
  channels = 36 if args.channels is None else args.channels
  validation.positive_int(channels, "--channels")
  validation.num_classes(args.classes, "--classes")
  shape = _parse_shape(args.input_shape)
  net = train_macro.build(space, arch, args.classes, shape, channels if space.name == "enas_macro" else None)
  counts = net.count()
  return {"command": "info", "space": space.name, "genotype": net.genotype, "arch": list(net.arch),
          "num_layers": space.num_layers, **({"channels": channels} if space.name == "enas_macro" else {}),
          "input_shape": list(shape), "classes": args.classes, "params": counts["params"],
          "params_total": counts["params"], "macs": counts["macs"], "flops": 2 * counts["macs"],
          "note": ("the ENAS stand-alone child: only the chosen ops' parameters exist, channels doubled at each "
                   "reduction" if space.name == "enas_macro" else "the chain network of the architecture's layers")
                  + "; no auxiliary head; macs are multiply-adds of convolutions and dense layers for one image; "
                  "flops = 2 * macs"}


ONESHOT_METHODS = ("darts", "gdas", "pcdarts", "drnas", "snas", "spos", "enas")
# --method nasrl is the controller strategy with NAS-RL's controller settings over a training estimator.
CONTROLLER_METHODS = {"nasrl": "controller", "nas_rl": "controller"}
SEARCH_DEFAULTS = {"strategy": "random", "estimator": "train", "executor": "auto", "num_archs": 6}


def _show_config(cfg) -> dict:
  """``--show-config``: the settings (every key is an option) are printed, nothing is run or written."""
  return {"command": "show-config", "config": cfg.to_dict(), "_no_result": True}


def _positive_count(text, option: str) -> int:
  try:
    value = int(str(text))
  except ValueError:
    value = None
  if value is None or value < 1:
    raise NasjaxError(f"{option} must be a positive integer, got {text!r}")
  return value


def _strategy_options(items) -> dict:
  """``KEY=VALUE`` pairs (VALUE read as JSON where it parses, else as text), validated later by the
  strategy itself."""
  options = {}
  for item in items or ():
    key, eq, value = item.partition("=")
    key = key.strip().replace("-", "_")
    if not eq or not key:
      raise NasjaxError(f"--strategy-option takes KEY=VALUE (e.g. population_size=20 or resources=[1,3,9]); "
                        f"got {item!r}")
    try:
      options[key] = json.loads(value)
    except json.JSONDecodeError:
      options[key] = value
  return options


def _search_mode(args) -> str:
  """``"oneshot"`` for a one-shot --method, else ``"discrete"`` (--method NAME is then --strategy NAME)."""
  method = args.method
  if method is not None and method.strip().lower() in ONESHOT_METHODS:
    given = [o for o, v in (("--strategy", args.strategy), ("--estimator", args.estimator),
                            ("--executor", args.executor), ("--strategy-option", args.strategy_option),
                            ("--num-archs", args.num_archs), ("--objectives", args.objectives),
                            ("--constraint", args.constraint), ("--robustness", args.robustness or None))
             if v is not None]
    if given:
      raise NasjaxError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for discrete search; "
                        f"--method {method} is a one-shot "
                        f"method (for SPOS weights ranked by a strategy, use --strategy NAME --estimator "
                        "weight_sharing)")
    return "oneshot"
  return "discrete"


def _discrete_strategy(args, space, options: dict):
  """The strategy of --strategy (or --method, its older spelling), built with its options."""
  from nasjax import strategies
  if args.method is not None and args.method.strip().lower() in CONTROLLER_METHODS:
    from nasjax.strategies.controller import nasrl_settings
    if args.strategy is not None and strategies.get_strategy(args.strategy, space).name != "controller":
      raise NasjaxError(f"--method {args.method} is the controller strategy; it disagrees with --strategy "
                        f"{args.strategy}")
    options.update({k: v for k, v in nasrl_settings().items() if k not in options})
    return "controller", strategies.get_strategy("controller", space, **options)
  if args.method is not None:
    try:
      by_method = strategies.get_strategy(args.method, space, **options)
    except NasjaxError as e:
      if "unknown strategy" not in str(e):
        raise
      raise NasjaxError(f"unknown search method {args.method!r}; accepted: one-shot {', '.join(ONESHOT_METHODS)}; "
                        f"discrete (same as --strategy) {', '.join(strategies.STRATEGY_NAMES)}") from None
    if args.strategy is None:
      return args.method, by_method
    if strategies.get_strategy(args.strategy, space, **options).name != by_method.name:
      raise NasjaxError(f"--method {args.method} and --strategy {args.strategy} disagree; give --strategy alone")
  name = args.strategy or SEARCH_DEFAULTS["strategy"]
  return name, strategies.get_strategy(name, space, **options)


def cmd_search(args) -> dict:
  if _search_mode(args) == "oneshot":
    if args.method.strip().lower() == "enas":
      return cmd_search_enas(args)
    return cmd_search_oneshot(args)
  return cmd_search_discrete(args)


def cmd_search_discrete(args) -> dict:
  """Discrete search: a strategy (--strategy), an estimator (--estimator) and a budget (--num-archs).

  Everything a user can get wrong is checked before any directory is written: names, the combination of
  space, strategy and estimator, the executor, the count, the strategy's and the estimator's options.
  """
  import jax
  from nasjax import data, search, spaces, strategies
  from nasjax.estimators import registry
  from nasjax.estimators.base import default_executor
  from nasjax.train import config_to_dict
  space = spaces.get_space(args.space)
  spec = registry.parse_spec(args.estimator or SEARCH_DEFAULTS["estimator"])
  executor = args.executor or SEARCH_DEFAULTS["executor"]
  if executor not in search.EXECUTORS:
    raise NasjaxError(f"unknown executor {executor!r}; accepted: {', '.join(search.EXECUTORS)}")
  if executor == "ray" and importlib.util.find_spec("ray") is None:
    raise NasjaxError("executor ray needs the ray package (pip install 'nasjax[ray]'); or use executor auto or "
                      "serial")
  budget = _positive_count(args.num_archs if args.num_archs is not None else SEARCH_DEFAULTS["num_archs"],
                           "--num-archs")
  options = _strategy_options(args.strategy_option)
  name, strategy = _discrete_strategy(args, space, options)
  objectives = _objectives(args, spec)
  robustness = _robustness(args, spec)
  if objectives is not None and strategy.num_objectives > 1 and "num_objectives" not in options:
    # A multi-objective strategy takes as many objectives as --objectives names.
    options["num_objectives"] = len(objectives.names)
    strategy = strategies.get_strategy(name, space, **options)
  if objectives is None and strategy.num_objectives > 1:
    raise NasjaxError(f"strategy {strategy.name} is multi-objective: give --objectives, e.g. "
                      "--objectives accuracy:max,latency_s:min")
  if objectives is not None:
    objectives.for_strategy(strategy)  # weights and counts checked before anything is built
  registry.check_combination(spec, space, strategy=strategy, executor=executor)
  cfg = registry.estimator_config(spec, space, preset="demo" if args.config == "demo" else "paper")
  _overrides(cfg, args, f"nasjax search with estimator {spec.kind} on {space.name}")
  if args.show_config:
    return _show_config(cfg)
  from nasjax.utils.validation import check_settings
  check_settings(cfg)
  _check_out(args.out, args.force, resumable=True)
  resources = None
  if strategy.num_fidelities > 1:
    # The strategy's fidelity levels are the estimator's (epochs of training, the table's schedules).
    resources = registry.fidelity_resources(spec, cfg, eta=options.get("eta", 3),
                                            resources=options.get("resources"))
    options["resources"] = list(resources)
    strategy = strategies.get_strategy(name, space, **options)
  dataset = data.load_dataset(args.data, args.data_dir) if registry.needs_data(spec) else None
  if dataset is not None:
    _check_search_fits(cfg, space, dataset)

  def build():
    return registry.build_estimator(
        spec, space, dataset, cfg, num_candidates=budget * (len(resources) if resources else 1),
        fidelity_resources=resources, workdir=args.out, show_progress=not args.quiet, robustness=robustness)

  if args.device_metrics and strategy.num_fidelities > 1:
    raise NasjaxError(f"--device-metrics measures full networks; it does not combine with the multi-fidelity "
                      f"strategy {strategy.name}")
  if registry.uses_workdir(spec):
    result_path = _prepare_out(args.out, args.force, resumable=True)
    estimator = _with_device_metrics(build(), args, space, dataset, cfg)
  else:  # built (a table read and checked) before the directory is made: bad input leaves nothing behind
    estimator = _with_device_metrics(build(), args, space, dataset, cfg)
    if objectives is not None:
      from nasjax.objectives import metric_names
      objectives.check_metrics(metric_names(estimator, space.num_decisions), f"estimator {spec.kind}")
    result_path = _prepare_out(args.out, args.force, resumable=True)
  identity = {"space": space.name, "strategy": strategy.name, "strategy_options": options,
              **registry.identity(spec, cfg), "dataset": dataset.fingerprint if dataset is not None else None,
              "config": config_to_dict(cfg)}
  if objectives is not None:
    identity["objectives"] = objectives.describe()
  if args.device_metrics:
    identity["device_metrics"] = True
  if robustness is not None:
    identity["robustness"] = robustness
  out = search.run(strategy, estimator, budget, jax.random.key(cfg.seed), workdir=args.out, identity=identity,
                   fitness_key=spec.fitness_key, show_progress=not args.quiet, to_string=space.to_string,
                   executor=executor, objectives=objectives)
  best = out["best"]
  extra = {}
  if objectives is not None:
    extra = {"objectives": objectives.describe(), "pareto": out["pareto"], "plots": []}
    if len(objectives.names) >= 2:
      from nasjax.parallel.distributed import is_main_process
      from nasjax.utils.pareto_plot import plot_pareto
      if is_main_process():
        plot_pareto(out["history"], objectives, out["pareto"], os.path.join(args.out, "pareto_front.png"))
        extra["plots"] = ["pareto_front.png"]
  if "entropy" in out["state"] and "baseline" in out["state"]:  # a policy (controller, REINFORCE): its curves
    from nasjax.oneshot.plots import plot_controller
    from nasjax.parallel.distributed import is_main_process
    rounds = [dict(r, best_sample_accuracy=r["best_fitness"]) for r in out["rounds"]]
    extra["rounds"] = out["rounds"]
    if is_main_process() and rounds:
      plot_controller(rounds, os.path.join(args.out, "controller.png"), xlabel="round")
      extra["plots"] = extra.get("plots", []) + ["controller.png"]
  ok = [r for r in out["history"] if not r["failed"]]
  if resources:
    ok = [r for r in ok if r["fidelity"] == best["fidelity"]]  # only the final level's scores compare
  return {"command": "search", "method": strategy.name, "strategy": strategy.name, "strategy_options": options,
          "estimator": str(spec), "executor": default_executor(estimator) if executor == "auto" else executor,
          "fitness": spec.fitness_key, "space": space.name, "genotype": best["genotype"], "arch": best["arch"],
          "data": args.data if dataset is not None else None, "seed": cfg.seed, "metrics": best["metrics"],
          "fidelity": best.get("fidelity"), "config": config_to_dict(cfg), "num_evaluated": len(out["history"]),
          "ranking": sorted(([r["metrics"].get(spec.fitness_key), r["genotype"]] for r in ok), reverse=True),
          **extra, "_result_path": result_path}


def _with_device_metrics(estimator, args, space, dataset, cfg):
  """With --device-metrics, ``estimator`` merged with each candidate's forward pass measured on this device
  (nasjax.estimators.objective_metrics.forward_estimator: latency_s, latency_batch_s,
  peak_activation_bytes), for the network of the estimator's settings; the estimator's own metrics win
  on a shared name (the NB201 table's latency_s)."""
  if not args.device_metrics:
    return estimator
  from nasjax.estimators.objective_metrics import forward_estimator, with_metrics
  layers = cfg.get("layers", cfg.get("cells_per_stage"))
  forward = forward_estimator(space, input_shape=tuple(dataset.input_shape) if dataset is not None else (32, 32, 3),
                              num_classes=dataset.num_classes if dataset is not None else 10,
                              channels=cfg.get("channels"), layers=layers, batch_size=int(cfg.get("batch_size", 64)))
  return with_metrics(estimator, forward)


def _robustness(args, spec) -> dict | None:
  """--robustness [--robustness-epsilon E] [--robustness-images N] as the train estimator's robustness
  settings (nasjax.estimators.train.ROBUSTNESS_DEFAULTS completed), None without --robustness; checked
  before anything is built."""
  given = {k: v for k, v in (("epsilon", args.robustness_epsilon), ("images", args.robustness_images))
           if v is not None}
  if not args.robustness:
    if given:
      raise NasjaxError("--robustness-epsilon and --robustness-images set the robustness metrics; add --robustness")
    return None
  from nasjax.estimators import registry
  return registry.check_robustness(spec, given)


def _objectives(args, spec):
  """--objectives / --constraint / --objective-weights / --reference as nasjax.objectives.Objectives (None
  without them); a constraint alone constrains the estimator's own fitness."""
  given = [args.objectives, args.constraint, args.objective_weights, args.reference]
  if all(v is None for v in given):
    return None
  from nasjax.objectives import make_objectives
  return make_objectives(args.objectives or f"{spec.fitness_key}:max", args.constraint, args.objective_weights,
                         args.reference)


def _check_search_fits(cfg, space, dataset, supernet: bool = False) -> None:
  """The memory check of :func:`_check_network_fits` for the network a search trains, where its settings
  say how large it is (channels, cells, batch); a supernet keeps every candidate op's output of an edge."""
  if not all(k in cfg for k in ("channels", "batch_size")) or not ("layers" in cfg or "cells_per_stage" in cfg):
    return
  if space.name == "nb201":
    layers, steps, edges = 3 * cfg.cells_per_stage + 2 if "cells_per_stage" in cfg else cfg.layers, 1, 6
  elif space.name in ("darts", "nasnet", "enas_micro"):
    layers, steps, edges = cfg.layers, 4, 14 if supernet else 8
  else:  # a chain of layers: one tensor each
    layers, steps, edges = cfg.layers, 0, 1
  if supernet:
    edges *= len(getattr(space, "supernet_ops", ())) or 1
  _check_network_fits(cfg.channels, layers, dataset.input_shape, cfg.batch_size, dataset.num_classes,
                      edges=edges, steps=steps, what=f"the {space.name} search's network of {layers} cells of "
                      f"{cfg.channels} channels, batch {cfg.batch_size}")


def _oneshot_config(args):
  from nasjax import oneshot
  make = oneshot.demo_search_config if args.config == "demo" else oneshot.search_config
  cfg = make(args.method, space="nb201" if args.space == "nb201" else "darts")
  cfg.space = args.space
  return _overrides(cfg, args, f"nasjax search --method {args.method}")


def cmd_search_oneshot(args) -> dict:
  from nasjax import data, oneshot, spaces
  args.method = args.method.strip().lower()
  space = spaces.get_space(args.space)
  nb201 = space.name == "nb201"
  if args.method in oneshot.METHODS:
    oneshot.search.check_space(oneshot.search_config(args.method), space)  # method x space, before the config
  cfg = _oneshot_config(args)
  if args.show_config:
    return _show_config(cfg)
  from nasjax.utils.validation import check_settings
  check_settings(cfg)
  oneshot.search.check_config(cfg)  # before anything is written
  oneshot.search.check_space(cfg, space)
  _check_out(args.out, args.force, resumable=True)
  dataset = data.load_dataset(args.data, args.data_dir)
  _check_search_fits(cfg, space, dataset, supernet=True)
  result_path = _prepare_out(args.out, args.force, resumable=True)
  result = oneshot.run_search(cfg, space, dataset, workdir=args.out, show_progress=not args.quiet)
  genotype = None if nb201 else spaces.Genotype.from_string(result["genotype"])
  from nasjax.oneshot import plots as oneshot_plots
  from nasjax.parallel.distributed import is_main_process
  skipped = {}
  if not is_main_process():
    plots = []
  elif nb201:  # alpha trajectories (where the method learns alphas); the cell is its genotype string
    has_alphas = bool(result["history"]) and "alphas" in result["history"][-1]
    plots = oneshot_plots.plot_nb201_search(result["history"], result["arch"], args.out) if has_alphas else []
    skipped = dict(oneshot_plots.NB201_SKIPPED_PLOTS)
    if not has_alphas:
      skipped["alphas_normal.png"] = f"{args.method} learns no architecture parameters"
  elif result["history"] and "alphas" in result["history"][-1]:
    plots = oneshot_plots.plot_search(result["history"], genotype, tuple(space.supernet_ops), args.out)
  else:  # SPOS learns no alphas: only the found cells are drawn
    plots = [oneshot_plots.plot_cell(genotype, cell, os.path.join(args.out, f"cell_{cell}.png"))
             for cell in ("normal", "reduce")]
  keep = ("method", "space", "genotype", "arch", "alphas", "derived_at_epoch", "epochs_run", "seconds",
          "stopped", "ranking", "history")
  out = {k: result[k] for k in keep if k in result}
  last = result["history"][-1] if result["history"] else {}
  if genotype is not None:
    out["genotype_json"] = genotype.to_json()
  if skipped:
    out["plots_skipped"] = skipped
  out.update(command="search", data=args.data, seed=cfg.seed,
             config=cfg.to_dict(), plots=[os.path.basename(p) for p in plots],
             metrics={k: last[k] for k in ("train_loss", "train_accuracy", "valid_accuracy", "valid_loss")
                      if k in last},
             _result_path=result_path)
  return out


def cmd_search_enas(args) -> dict:
  """ENAS (Pham et al. 2018): the controller and a shared network in alternation; the derived architecture
  is the best of the trained controller's samples under the shared weights."""
  from nasjax import data, spaces
  from nasjax.oneshot import enas
  from nasjax.oneshot import plots as oneshot_plots
  from nasjax.parallel.distributed import is_main_process
  space = spaces.get_space(args.space)
  cfg = (enas.demo_enas_config if args.config == "demo" else enas.enas_config)(space.name)
  _overrides(cfg, args, "nasjax search --method enas")
  if args.show_config:
    return _show_config(cfg)
  from nasjax.utils.validation import check_settings
  check_settings(cfg)
  enas.check_config(cfg)
  enas.shared_network(space, cfg, 2)  # a space without a shared network is refused before anything is written
  _check_out(args.out, args.force, resumable=True)
  dataset = data.load_dataset(args.data, args.data_dir)
  _check_search_fits(cfg, space, dataset)
  result_path = _prepare_out(args.out, args.force, resumable=True)
  result = enas.run_enas(cfg, space, dataset, workdir=args.out, show_progress=not args.quiet)
  plots = []
  if is_main_process():
    plots = [os.path.basename(oneshot_plots.plot_controller(result["history"], os.path.join(args.out,
                                                                                          "controller.png")))]
    if isinstance(space, spaces.CellSpace):
      genotype = spaces.Genotype.from_string(result["genotype"])
      plots += [os.path.basename(oneshot_plots.plot_cell(genotype, cell, os.path.join(args.out, f"cell_{cell}.png")))
                for cell in ("normal", "reduce")]
  last = result["history"][-1] if result["history"] else {}
  out = {k: result[k] for k in ("method", "space", "genotype", "arch", "valid_accuracy", "epochs_run", "seconds",
                                "history") if k in result}
  out.update(command="search", data=args.data, seed=cfg.seed, config=cfg.to_dict(), plots=plots,
             ranking=[[r["valid_accuracy"], r["genotype"]] for r in result["ranking"]],
             metrics={k: last[k] for k in ("train_loss", "train_accuracy", "reward", "entropy", "baseline")
                      if k in last},
             _result_path=result_path)
  return out


class _Parser(argparse.ArgumentParser):
  """argparse with the command's one-line errors (``error: ...``, exit status 2)."""

  def error(self, message):
    self.exit(2, f"error: {message} (see {self.prog} --help)\n")


_OVERRIDES_HELP = ("Every key of the command's settings is an option too: --key-name VALUE or --key_name=VALUE "
                   "(booleans: --key / --no-key); --show-config prints the settings the other options chose.")


def build_parser() -> argparse.ArgumentParser:
  from nasjax import search, spaces, strategies
  from nasjax.estimators import registry
  ap = _Parser(prog="nasjax", description="Neural architecture search in JAX/Flax.", allow_abbrev=False)
  sub = ap.add_subparsers(dest="command")

  def common(p, out_default):
    p.add_argument("--out", default=out_default, help="output directory (result.json, logs, checkpoints)")
    p.add_argument("--force", action="store_true", help="replace an existing result.json in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

  def data_args(p, default="embedded"):
    p.add_argument("--data", default=default,
                   help="'embedded' (bundled Fashion-MNIST subset), a .npz file, or tfds:NAME")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")

  s = sub.add_parser("search", help="search for an architecture (default: the embedded demo)", allow_abbrev=False,
                     epilog=_OVERRIDES_HELP + " Discrete search settings: the estimator's (e.g. --epochs, "
                            "--channels, --layers, --batch-size, --train-subset, --seed for train); one-shot: "
                            "the method's (e.g. --order, --hessian, --learning-rate, --arch-learning-rate).")
  common(s, "runs/search")
  data_args(s)
  s.add_argument("--space", default="darts", help="search space: " + ", ".join(spaces.SPACE_NAMES))
  s.add_argument("--strategy", default=None,
                 help="discrete strategy (default random): " + ", ".join(strategies.STRATEGY_NAMES))
  s.add_argument("--estimator", default=None,
                 help="how a discrete search scores a candidate (default train): " + registry.accepted_specs())
  s.add_argument("--executor", default=None,
                 help="how a batch of candidates is evaluated (default auto: vmap for a jittable estimator, "
                      "else serial): " + ", ".join(search.EXECUTORS))
  s.add_argument("--num-archs", default=None,
                 help="discrete search budget: candidates to evaluate (default 4); full-training equivalents "
                      "for successive_halving and hyperband")
  s.add_argument("--strategy-option", action="append", default=None, metavar="KEY=VALUE",
                 help="a strategy option (repeatable), e.g. population_size=20, resources=[1,3,9]; VALUE is JSON "
                      "or text")
  s.add_argument("--objectives", default=None, metavar="NAME:max|min[,...]",
                 help="metrics to optimise, e.g. accuracy:max,latency_s:min (nsga2 keeps a Pareto front; other "
                      "strategies need --objective-weights); result.json gets the front and its hypervolume")
  s.add_argument("--constraint", action="append", default=None, metavar="METRIC<=BOUND",
                 help="repeatable, e.g. latency_s<=0.002 (also >=, <, >): a violating candidate counts as failed")
  s.add_argument("--objective-weights", default=None, metavar="W1,W2,...",
                 help="weights of the maximised objectives (minimised ones negated) for a single-objective strategy")
  s.add_argument("--reference", default=None, metavar="V1,V2,...",
                 help="hypervolume reference point in the objectives' raw values (default: the worst value of "
                      "each over the feasible evaluations)")
  s.add_argument("--device-metrics", action="store_true",
                 help="also measure each candidate's forward pass on this device: latency_s (batch 1), "
                      "latency_batch_s (--batch-size), peak_activation_bytes; usable as --objectives")
  s.add_argument("--robustness", action="store_true",
                 help="train estimator: also score each trained candidate on validation images under common "
                      "corruptions and FGSM / PGD attacks: accuracy_clean, accuracy_corrupted, accuracy_fgsm, "
                      "accuracy_pgd (and each corruption's); usable as --objectives, e.g. accuracy:max,accuracy_pgd:max")
  s.add_argument("--robustness-epsilon", type=float, default=None, metavar="EPS",
                 help="L-infinity radius of FGSM and PGD on images in [0, 1] (default 8/255)")
  s.add_argument("--robustness-images", type=int, default=None, metavar="N",
                 help="validation images each candidate's robustness is measured on (default 256)")
  s.add_argument("--method", default=None,
                 help="one-shot method: " + ", ".join(ONESHOT_METHODS) + " (on nb201 all but pcdarts); nasrl (the "
                      "controller over a training estimator); a strategy "
                      "name here is the same as --strategy")
  s.add_argument("--config", choices=["paper", "demo"], default="paper",
                 help="one-shot and weight_sharing supernet settings: the method's paper (CIFAR-10 search) or a "
                      "minutes-long CPU demo")
  s.add_argument("--show-config", action="store_true", help="print the settings and exit")

  t = sub.add_parser("train", help="retrain a genotype under the DARTS evaluation protocol", allow_abbrev=False,
                     epilog=_OVERRIDES_HELP + " E.g. --epochs, --batch-size, --channels, --layers, "
                            "--learning-rate, --cutout, --drop-path, --seed, --train-subset, --auxiliary, --flip.")
  common(t, "runs/train")
  data_args(t)
  t.add_argument("--genotype", required=True, help="published NAME, genotype string, or .json file (a search's or "
                 "train's result.json, any trainable space)")
  t.add_argument("--space", default=None, help="the space of a --genotype string: a cell space (default: the first "
                 "that accepts it) or " + ", ".join(_MACRO_SPACES) + " (their '|' notation)")
  t.add_argument("--config", choices=["darts", "demo"], default="darts")
  t.add_argument("--show-config", action="store_true", help="print the settings and exit")

  e = sub.add_parser("eval", help="test accuracy of a trained network (a `nasjax train` --out directory)",
                     allow_abbrev=False)
  common(e, "runs/eval")
  data_args(e, default=None)
  e.add_argument("--checkpoint", required=True, help="the --out directory of a finished `nasjax train`")

  i = sub.add_parser("info", help="parameters and multiply-adds of the network built from a genotype",
                     allow_abbrev=False)
  i.add_argument("--out", default=None, help="also write result.json here")
  i.add_argument("--force", action="store_true")
  i.add_argument("--genotype", required=True)
  i.add_argument("--space", default=None, help="the space of a --genotype string (see nasjax train --help)")
  # None: the cell network's default (36, 20, with the head, cifar); the non-cell networks refuse what they lack.
  i.add_argument("--channels", type=int, default=None, help="initial channels (default 36)")
  i.add_argument("--layers", type=int, default=None, help="cells (default 20)")
  i.add_argument("--auxiliary", action=argparse.BooleanOptionalAction, default=None,
                 help="count the auxiliary head in params_total (default: yes)")
  i.add_argument("--input-shape", default="32,32,3")
  i.add_argument("--classes", type=int, default=10)
  i.add_argument("--stem", default=None, help="cifar (3x3 conv, the default) or imagenet (three stride-2 convs, "
                 "DARTS' ImageNet network: --channels 48 --layers 14 --input-shape 224,224,3 --classes 1000)")

  x = sub.add_parser("export", help="write a trained network (a `nasjax train` --out directory) as StableHLO or "
                     "ONNX", allow_abbrev=False)
  x.add_argument("--checkpoint", required=True, help="the --out directory of a finished `nasjax train`")
  x.add_argument("--format", required=True, help="stablehlo (jax.export, parameters inside) or onnx (jax2onnx)")
  x.add_argument("--out", required=True, help="the file to write")
  x.add_argument("--force", action="store_true", help="replace an existing --out file")
  x.add_argument("--input-shape", default=None, help="H,W,C of the input (default: the training images')")
  return ap


def parse_args(argv) -> argparse.Namespace:
  """The command's arguments; options it does not define are kept in ``args.overrides`` for the settings
  (search, train) or refused (eval, info). No command, or options alone, means ``search``."""
  argv = list(argv)
  if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
    argv = ["search"] + argv
  args, extras = build_parser().parse_known_args(argv)
  if args.command in ("eval", "info", "export") and extras:
    raise NasjaxError(f"unrecognized arguments for nasjax {args.command}: {' '.join(extras)} "
                      f"(see nasjax {args.command} --help)")
  args.overrides = extras
  return args


def _enable_compilation_cache() -> None:
  """Keeps compiled programs on disk, so a rerun (a resume, the same search) skips XLA compilation."""
  if os.environ.get("NASJAX_NO_COMPILATION_CACHE"):
    return
  import jax
  if jax.config.jax_compilation_cache_dir is None:
    path = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nasjax", "xla")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def main(argv=None) -> int:
  from nasjax import xla_workarounds
  xla_workarounds.apply()  # GPU compiler workarounds, before any JAX computation
  try:
    args = parse_args(sys.argv[1:] if argv is None else argv)
  except SystemExit as e:  # --help, or an argparse error already printed as one line
    return e.code if isinstance(e.code, int) else 2
  except NasjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  _enable_compilation_cache()
  command = args.command
  try:
    if command == "export":
      print(json.dumps(cmd_export(args), indent=2))
      return 0
    if command == "info":
      if args.out is not None:
        _check_out(args.out, args.force)  # before the network is built and counted
      result = cmd_info(args)
      if args.out is not None:
        _write_result(_prepare_out(args.out, args.force), result)
      print(json.dumps({k: v for k, v in result.items()}, indent=2))
      return 0
    handler = {"search": cmd_search, "train": cmd_train, "eval": cmd_eval}[command]
    from nasjax.parallel import distributed as dist
    # A multi-process job (NASJAX_COORDINATOR, NASJAX_NUM_PROCESSES, NASJAX_PROCESS_ID set for each
    # process) runs the same command in every process over one global device mesh; alone, this is a no-op.
    dist.initialize()
    result = handler(args)
    if result.pop("_no_result", False):
      dist.shutdown()
      print(json.dumps(result, indent=2, default=float))
      return 0
    path = result.pop("_result_path")
    if dist.is_main_process():
      _write_result(path, result)
    dist.shutdown()
    summary = {k: result[k] for k in ("command", "space", "genotype", "metrics") if k in result}
    print(json.dumps(dict(summary, result=path), indent=2, default=float))
    return 0
  except NasjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted: checkpoints and logs written so far are kept; rerun the same command to resume",
          file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
