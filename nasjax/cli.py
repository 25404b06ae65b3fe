"""The ``nasjax`` command: search, train, eval, info. Kept thin; the work is in the library.

``nasjax search`` with no arguments runs the embedded demo: random search over DARTS cells, each candidate
trained briefly on the bundled Fashion-MNIST subset. Every command writes ``--out DIR/result.json`` and
never overwrites a finished result; user mistakes print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
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


def _prepare_out(out: str, force: bool = False, resumable: bool = False) -> str:
  path = os.path.join(out, "result.json")
  if os.path.exists(path) and not force:
    raise NasjaxError(f"{path} already exists (a finished run); choose another --out directory or pass "
                      "--force to replace the result file (checkpoints and logs are kept)")
  if os.path.exists(out) and not os.path.isdir(out):
    raise NasjaxError(f"--out {out} exists and is not a directory")
  if not resumable and os.path.isdir(out) and os.listdir(out) and not force:
    raise NasjaxError(f"--out {out} is not empty; choose another directory or pass --force")
  os.makedirs(out, exist_ok=True)
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
    try:
      with open(spec) as f:
        data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise NasjaxError(f"genotype file {spec} is not valid JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("genotype"), str):
      text = data["genotype"]
    elif isinstance(data, dict) and "normal" in data:
      genotype = spaces.Genotype.from_json(data)
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
  space, arch, genotype = resolve_genotype(args.genotype)
  shape = _parse_shape(args.input_shape)
  net = Network(genotype, args.channels, args.layers, args.classes, auxiliary=args.auxiliary,
                dw_impl="grouped", conv_impl="xla", scan_cells=False)
  x = jnp.zeros((1,) + shape)
  variables = abstract_variables(net, shape)
  # The auxiliary head only trains; an inference pass (what the papers' multiply-adds count) skips it.
  deployed = net.clone(auxiliary=False)
  macs = count_macs(lambda v, x: deployed.apply(v, x)[0], {**variables, "params": {
      k: v for k, v in variables["params"].items() if k != AUX_NAME}}, x)
  return {"command": "info", "space": space.name, "genotype": genotype.to_string(),
          "arch": [int(v) for v in arch], "channels": args.channels, "layers": args.layers,
          "auxiliary": args.auxiliary, "input_shape": list(shape), "classes": args.classes,
          "params": count_params(variables["params"]),
          "params_total": count_params(variables["params"], exclude=()),
          "macs": macs, "flops": 2 * macs,
          "note": "params and macs leave the auxiliary head out (it only trains), as the papers count; macs "
                  "are multiply-adds of convolutions and dense layers for one image (papers' 'FLOPs' "
                  "usually mean these); flops = 2 * macs"}


def _override(cfg, args, fields):
  """The config with every option among ``fields`` that the command line set (None = not given)."""
  for field in fields:
    value = getattr(args, field, None)
    if value is not None:
      cfg[field] = value
  return cfg


def _train_config(args):
  from nasjax import train
  cfg = train.demo_config() if args.config == "demo" else train.darts_eval_config()
  return _override(cfg, args, ("epochs", "batch_size", "channels", "layers", "seed", "learning_rate",
                                "cutout", "drop_path", "train_subset", "auxiliary", "flip"))


def cmd_train(args) -> dict:
  from nasjax import data, train
  result_path = _prepare_out(args.out, args.force, resumable=True)
  space, arch, genotype = resolve_genotype(args.genotype)
  dataset = data.load_dataset(args.data, args.data_dir)
  cfg = _train_config(args)
  if args.flip is not None:
    cfg.flip = args.flip
  # train_genotype adds the data's content fingerprint: the same file by another path still resumes.
  identity = {"genotype": genotype.to_string(), "config": train.config_to_dict(cfg)}
  fit = train.train_genotype(genotype, dataset, cfg, workdir=args.out, show_progress=not args.quiet,
                             identity=identity)
  return {"command": "train", "method": "retrain", "space": space.name, "genotype": genotype.to_string(),
          "arch": [int(v) for v in arch], "data": args.data, "seed": cfg.seed,
          "config": train.config_to_dict(cfg), "metrics": fit.final, "history": fit.history,
          "_result_path": result_path}


def cmd_eval(args) -> dict:
  import jax.numpy as jnp
  from nasjax import data, train
  from nasjax.nn.network import Network
  from nasjax.utils import checkpoint as ckpt
  result_path = _prepare_out(args.out, args.force)
  source = os.path.join(args.checkpoint, "result.json")
  if not os.path.exists(source):
    raise NasjaxError(f"{args.checkpoint} is not a finished `nasjax train` directory (no result.json)")
  with open(source) as f:
    trained = json.load(f)
  space, arch, genotype = resolve_genotype(trained["genotype"])
  cfg = train.darts_eval_config()
  cfg.update(trained["config"])
  dataset = data.load_dataset(args.data or trained["data"], args.data_dir)
  network = Network(genotype, cfg.channels, cfg.layers, dataset.num_classes, auxiliary=cfg.auxiliary)
  sample = jnp.zeros((2,) + dataset.input_shape, jnp.float32)
  batcher = data.Batcher(dataset.x_train, dataset.y_train, cfg.batch_size, seed=cfg.seed)
  tx = train.make_optimizer(cfg, batcher.steps_per_epoch)
  template = train.init_state(lambda k: network.init({"params": k, "dropout": k}, sample), tx, cfg.seed)
  manager = ckpt.Manager(os.path.join(os.path.abspath(args.checkpoint), "checkpoints"))
  # Evaluating on other data (--data) is allowed, so the training data is not compared: neither its
  # fingerprint nor the path that checkpoints written before the fingerprint recorded.
  identity = {"genotype": genotype.to_string(), "config": trained["config"]}
  restored = manager.restore_latest(template, identity, ignore=("dataset", "data"))
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


ONESHOT_METHODS = ("darts", "gdas", "pcdarts", "drnas", "snas", "spos")
# Strategies that evaluate every architecture at full fidelity; the multi-fidelity ones need an
# estimator with a fidelity axis (see nasjax.estimators), which this command does not build.
DISCRETE_METHODS = ("random", "regularized_evolution", "evolution", "local_search", "bayesopt", "bo",
                    "reinforce")


def cmd_search(args) -> dict:
  if args.method in ONESHOT_METHODS:
    return cmd_search_oneshot(args)
  if args.method not in DISCRETE_METHODS:
    raise NasjaxError(f"unknown search method {args.method!r}; accepted: "
                      f"{', '.join(ONESHOT_METHODS + DISCRETE_METHODS)}")
  import jax
  from nasjax import data, search, spaces, strategies
  from nasjax.estimators.train import ShortTrainingEstimator, short_training_config
  from nasjax.train import config_to_dict
  result_path = _prepare_out(args.out, args.force, resumable=True)
  space = spaces.get_space(args.space)
  dataset = data.load_dataset(args.data, args.data_dir)
  cfg = short_training_config()
  for field in ("epochs", "batch_size", "channels", "layers", "seed"):
    value = getattr(args, field, None)
    if value is not None:
      cfg[field] = value
  if args.train_subset is not None:
    cfg.train_subset = args.train_subset
  estimator = ShortTrainingEstimator(space, dataset, cfg, show_progress=False)
  identity = {"space": space.name, "dataset": dataset.fingerprint, "method": args.method,
              "config": config_to_dict(cfg)}
  strategy = strategies.get_strategy(args.method, space)
  out = search.run(strategy, estimator, args.num_archs, jax.random.key(cfg.seed),
                   workdir=args.out, identity=identity, show_progress=not args.quiet,
                   to_string=space.to_string)
  best = out["best"]
  return {"command": "search", "method": args.method, "space": space.name, "genotype": best["genotype"],
          "arch": best["arch"], "data": args.data, "seed": cfg.seed, "metrics": best["metrics"],
          "config": config_to_dict(cfg), "num_evaluated": len(out["history"]),
          "ranking": sorted(([r["metrics"].get("accuracy"), r["genotype"]] for r in out["history"]
                             if not r["failed"]), reverse=True),
          "_result_path": result_path}


def _oneshot_config(args):
  from nasjax import oneshot
  cfg = oneshot.demo_search_config(args.method) if args.config == "demo" else oneshot.search_config(args.method)
  cfg.space = args.space
  return _override(cfg, args, ("epochs", "batch_size", "channels", "layers", "seed", "order", "hessian",
                                "learning_rate", "arch_learning_rate", "partial_channels", "anti_collapse",
                                "eigen_every", "train_subset", "arch_warmup_epochs", "checkpoint_every_steps",
                                "flip", "cost_weight", "cost_metric"))


def cmd_search_oneshot(args) -> dict:
  from nasjax import data, oneshot, spaces
  result_path = _prepare_out(args.out, args.force, resumable=True)
  space = spaces.get_space(args.space)
  if not hasattr(space, "supernet_ops"):
    raise NasjaxError(f"--method {args.method} needs a cell space with a supernet (darts, nasnet, "
                      f"enas_micro); got {space.name!r}")
  dataset = data.load_dataset(args.data, args.data_dir)
  cfg = _oneshot_config(args)
  result = oneshot.run_search(cfg, space, dataset, workdir=args.out, show_progress=not args.quiet)
  genotype = spaces.Genotype.from_string(result["genotype"])
  from nasjax.oneshot import plots as oneshot_plots
  from nasjax.parallel.distributed import is_main_process
  if not is_main_process():
    plots = []
  elif result["history"] and "alphas" in result["history"][-1]:
    plots = oneshot_plots.plot_search(result["history"], genotype, tuple(space.supernet_ops), args.out)
  else:  # SPOS learns no alphas: only the found cells are drawn
    plots = [oneshot_plots.plot_cell(genotype, cell, os.path.join(args.out, f"cell_{cell}.png"))
             for cell in ("normal", "reduce")]
  keep = ("method", "space", "genotype", "arch", "alphas", "derived_at_epoch", "epochs_run", "seconds",
          "stopped", "ranking", "history")
  out = {k: result[k] for k in keep if k in result}
  last = result["history"][-1] if result["history"] else {}
  out.update(command="search", genotype_json=genotype.to_json(), data=args.data, seed=cfg.seed,
             config=cfg.to_dict(), plots=[os.path.basename(p) for p in plots],
             metrics={k: last[k] for k in ("train_loss", "train_accuracy", "valid_accuracy", "valid_loss")
                      if k in last},
             _result_path=result_path)
  return out


def build_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog="nasjax", description="Neural architecture search in JAX/Flax.")
  sub = ap.add_subparsers(dest="command")

  def common(p, out_default):
    p.add_argument("--out", default=out_default, help="output directory (result.json, logs, checkpoints)")
    p.add_argument("--force", action="store_true", help="replace an existing result.json in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

  def data_args(p, default="embedded"):
    p.add_argument("--data", default=default,
                   help="'embedded' (bundled Fashion-MNIST subset), a .npz file, or tfds:NAME")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")

  s = sub.add_parser("search", help="search for an architecture (default: the embedded demo)")
  common(s, "runs/search")
  data_args(s)
  s.add_argument("--method", default="random",
                 help="one-shot: darts, gdas, pcdarts, drnas, snas, spos; discrete (each candidate trained "
                      "briefly): random, regularized_evolution, local_search, bayesopt, reinforce")
  s.add_argument("--config", choices=["paper", "demo"], default="paper",
                 help="one-shot settings: the method's paper (CIFAR-10 search) or a minutes-long CPU demo")
  s.add_argument("--order", type=int, choices=[1, 2], default=None, help="DARTS order (2 = exact hypergradient)")
  s.add_argument("--hessian", choices=["jvp", "jvp_recompute", "unroll", "finite_difference"], default=None,
                 help="second-order product: exact (jvp; jvp_recompute: less memory, one more pass; unroll) "
                      "or the paper's finite difference")
  s.add_argument("--anti-collapse", choices=["none", "darts_minus", "skip_limit", "eigenvalue"], default=None)
  s.add_argument("--eigen-every", type=int, default=None, help="log the Hessian eigenvalue every N epochs")
  s.add_argument("--cost-weight", type=float, default=None,
                 help="one-shot: weight of the expected edge cost (relative to a uniform cell's) in the "
                      "architecture objective; 0 = off")
  s.add_argument("--cost-metric", choices=["params", "flops"], default=None,
                 help="what --cost-weight penalises: parameters or multiply-adds of the cells' edges")
  s.add_argument("--learning-rate", type=float, default=None)
  s.add_argument("--arch-learning-rate", type=float, default=None)
  s.add_argument("--partial-channels", type=int, default=None, help="PC-DARTS K")
  s.add_argument("--arch-warmup-epochs", type=int, default=None)
  s.add_argument("--checkpoint-every-steps", type=int, default=None)
  s.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)
  s.add_argument("--space", default="darts")
  s.add_argument("--num-archs", type=int, default=4)
  s.add_argument("--epochs", type=int, default=None)
  s.add_argument("--batch-size", type=int, default=None)
  s.add_argument("--channels", type=int, default=None)
  s.add_argument("--layers", type=int, default=None)
  s.add_argument("--train-subset", type=int, default=None, help="train each candidate on this many images")
  s.add_argument("--seed", type=int, default=None)

  t = sub.add_parser("train", help="retrain a genotype under the DARTS evaluation protocol")
  common(t, "runs/train")
  data_args(t)
  t.add_argument("--genotype", required=True, help="published NAME, genotype string, or .json file")
  t.add_argument("--config", choices=["darts", "demo"], default="darts")
  t.add_argument("--epochs", type=int, default=None)
  t.add_argument("--batch-size", type=int, default=None)
  t.add_argument("--channels", type=int, default=None)
  t.add_argument("--layers", type=int, default=None)
  t.add_argument("--learning-rate", type=float, default=None)
  t.add_argument("--cutout", type=int, default=None)
  t.add_argument("--drop-path", type=float, default=None)
  t.add_argument("--seed", type=int, default=None)
  t.add_argument("--train-subset", type=int, default=None, help="train on a class-balanced subset")
  t.add_argument("--auxiliary", action=argparse.BooleanOptionalAction, default=None)
  t.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)

  e = sub.add_parser("eval", help="test accuracy of a trained network (a `nasjax train` --out directory)")
  common(e, "runs/eval")
  data_args(e, default=None)
  e.add_argument("--checkpoint", required=True, help="the --out directory of a finished `nasjax train`")

  i = sub.add_parser("info", help="parameters and multiply-adds of the network built from a genotype")
  i.add_argument("--out", default=None, help="also write result.json here")
  i.add_argument("--force", action="store_true")
  i.add_argument("--genotype", required=True)
  i.add_argument("--channels", type=int, default=36)
  i.add_argument("--layers", type=int, default=20)
  i.add_argument("--auxiliary", action=argparse.BooleanOptionalAction, default=True)
  i.add_argument("--input-shape", default="32,32,3")
  i.add_argument("--classes", type=int, default=10)
  return ap


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
  args = build_parser().parse_args(argv)
  _enable_compilation_cache()
  command = args.command or "search"
  if args.command is None:
    args = build_parser().parse_args(["search"] + list(argv or []))
  try:
    if command == "info":
      result = cmd_info(args)
      if args.out:
        _write_result(_prepare_out(args.out, args.force), result)
      print(json.dumps({k: v for k, v in result.items()}, indent=2))
      return 0
    handler = {"search": cmd_search, "train": cmd_train, "eval": cmd_eval}[command]
    from nasjax.parallel import distributed as dist
    # A multi-process job (NASJAX_COORDINATOR, NASJAX_NUM_PROCESSES, NASJAX_PROCESS_ID set for each
    # process) runs the same command in every process over one global device mesh; alone, this is a no-op.
    dist.initialize()
    result = handler(args)
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
