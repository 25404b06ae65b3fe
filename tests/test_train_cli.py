"""End to end: the CLI's search, train, eval and info on small data; resume; bad inputs."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import NasjaxError, cli, data, train
from nasjax.nn.network import Network
from nasjax.spaces import get_genotype

# One cell (no reduction cells): what these tests check does not depend on depth, and each cell is
# compiled code.
TINY_TRAIN = ["--config", "demo", "--channels", "4", "--layers", "1", "--batch-size", "32",
              "--train-subset", "128", "--quiet"]


def read(path):
  with open(path) as f:
    return json.load(f)


@pytest.mark.usefixtures("fastest_compiles_for_test")
def test_search_demo_end_to_end(tmp_path, capsys):
  out = tmp_path / "search"
  # Small explicit sizes: the test does not depend on the demo's defaults (nor grow with them); one cell,
  # since each candidate's network is compiled on its own (3 cells: ~45 CPU s).
  rc = cli.main(["search", "--num-archs", "2", "--epochs", "1", "--channels", "4", "--layers", "1",
                 "--batch-size", "32", "--train-subset", "128", "--out", str(out), "--quiet"])
  assert rc == 0, capsys.readouterr().err
  result = read(out / "result.json")
  assert result["method"] == "random" and result["space"] == "darts"
  assert result["genotype"].startswith("Genotype(normal=[")
  assert len(result["arch"]) == 32 and result["num_evaluated"] == 2
  assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
  assert {"jax", "flax", "nasjax"} <= set(result["versions"])
  lines = (out / "evaluations.jsonl").read_text().splitlines()
  assert len(lines) == 2
  # A finished result is never overwritten.
  rc = cli.main(["search", "--num-archs", "2", "--out", str(out), "--quiet"])
  assert rc == 2 and "already exists" in capsys.readouterr().err


# 8x8 images (conftest.py: write_tiny_npz) and XLA's optimisation passes off: the commands' files and
# agreement are under test, not accuracy or speed; on the embedded 28x28 set with the passes on this took
# ~25 CPU s.
@pytest.mark.usefixtures("fastest_compiles_for_test")
def test_train_eval_and_info(tmp_path, capsys, write_tiny_npz):
  out = tmp_path / "train"
  npz = write_tiny_npz(tmp_path / "tiny.npz", 128, 32)
  rc = cli.main(["train", "--genotype", "DARTS_V2", "--epochs", "1", "--data", npz, "--out", str(out)]
                + TINY_TRAIN)
  assert rc == 0, capsys.readouterr().err
  result = read(out / "result.json")
  assert result["genotype"] == get_genotype("DARTS_V2").to_string()
  assert 0.0 <= result["metrics"]["eval_accuracy"] <= 1.0
  assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
  capsys.readouterr()
  rc = cli.main(["eval", "--checkpoint", str(out), "--out", str(tmp_path / "eval"), "--quiet"])
  assert rc == 0, capsys.readouterr().err
  ev = read(tmp_path / "eval" / "result.json")
  assert ev["metrics"]["test_accuracy"] == pytest.approx(result["metrics"]["eval_accuracy"], abs=1e-6)
  # The genotype of a result.json is accepted by --genotype.
  capsys.readouterr()
  rc = cli.main(["info", "--genotype", str(out / "result.json"), "--channels", "36", "--layers", "20"])
  assert rc == 0
  info = json.loads(capsys.readouterr().out)
  # 528M multiply-adds for one 32x32 image, the auxiliary head left out (it only trains).
  assert info["params"] == 3_349_342 and info["params_total"] > info["params"] and info["macs"] == 528_359_040


@pytest.mark.parametrize("genotype,message", [
    ("Genotype(normal=[('sep_conv_3x3', 0)", "malformed"),
    ("Genotype(normal=[('sep_conv_9x9', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
     "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
     "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
     "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
     "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])", "sep_conv_9x9"),
    ("NO_SUCH_NET", "unknown genotype"),
    ("missing.json", "does not exist"),
])
def test_bad_genotypes_give_one_clear_error(genotype, message, capsys):
  rc = cli.main(["info", "--genotype", genotype])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and "Traceback" not in err


def test_unknown_dataset_and_bad_npz(tmp_path, capsys):
  rc = cli.main(["train", "--genotype", "DARTS_V2", "--data", "no_such_set", "--out", str(tmp_path / "a")])
  assert rc == 2 and "no_such_set" in capsys.readouterr().err
  bad = tmp_path / "bad.npz"
  np.savez(bad, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, np.int64))
  rc = cli.main(["train", "--genotype", "DARTS_V2", "--data", str(bad), "--out", str(tmp_path / "b")])
  err = capsys.readouterr().err
  assert rc == 2 and "x_test" in err and "Traceback" not in err


# The tiny 8x8 set and XLA's optimisation passes off (the same settings as test_crash_safety's retraining,
# whose compiled programs a worker's compilation cache may then share): bitwise equality of a resumed run
# does not depend on the data or on XLA's passes; on the embedded set with them on this took ~25 CPU s.
@pytest.mark.usefixtures("fastest_compiles_for_test")
def test_resume_after_kill_is_exact(tmp_path, tiny_dataset):
  """Killed after the first epoch's checkpoint, a rerun ends bitwise where an uninterrupted run ends."""
  ds = tiny_dataset
  cfg = train.demo_config()
  cfg.update(epochs=2, channels=4, layers=1, batch_size=16, eval_batch_size=16, drop_path=0.1, cutout=0)
  genotype = get_genotype("DARTS_V2")
  identity = {"genotype": genotype.to_string(), "config": train.config_to_dict(cfg)}
  whole = train.train_genotype(genotype, ds, cfg, workdir=str(tmp_path / "whole"), show_progress=False,
                               identity=identity)

  killed = tmp_path / "killed"
  from nasjax.training import supervised  # the engine's loop, which train_genotype runs
  original = supervised.run_epochs

  def die_after_first_epoch(*args, **kwargs):
    state, history = original(*args, **dict(kwargs, stop_after=1))
    raise KeyboardInterrupt

  supervised.run_epochs = die_after_first_epoch
  try:
    with pytest.raises(KeyboardInterrupt):
      train.train_genotype(genotype, ds, cfg, workdir=str(killed), show_progress=False, identity=identity)
  finally:
    supervised.run_epochs = original
  resumed = train.train_genotype(genotype, ds, cfg, workdir=str(killed), show_progress=False,
                                 identity=identity)
  for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert len((killed / "metrics.jsonl").read_text().splitlines()) == 2

  # Mismatched resume and damaged checkpoints are refused with a message.
  other = dict(identity, genotype=get_genotype("DARTS_V1").to_string())
  with pytest.raises(NasjaxError, match="another run"):
    train.train_genotype(genotype, ds, cfg, workdir=str(killed), show_progress=False, identity=other)
  for root, _, files in os.walk(killed / "checkpoints"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with pytest.raises(NasjaxError, match="checkpoint"):
    train.train_genotype(genotype, ds, cfg, workdir=str(killed), show_progress=False, identity=identity)


@pytest.mark.usefixtures("fastest_compiles_for_test")
def test_data_parallel_step_equals_single_device():
  if jax.device_count() < 4:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4")
  # One cell: its BatchNorms and drop-path are what data parallelism could get wrong, not the depth.
  net = Network(get_genotype("DARTS_V2"), channels=4, layers=1, num_classes=10, auxiliary=False)
  cfg = train.demo_config()
  cfg.update(cutout=4, flip=True, drop_path=0.1)
  tx = train.make_optimizer(cfg, 10)
  x = jnp.zeros((2, 16, 16, 3))
  init = lambda k: net.init({"params": k, "dropout": k}, x)  # noqa: E731
  images = np.asarray(jax.random.randint(jax.random.key(0), (16, 16, 16, 3), 0, 255), np.uint8)
  labels = np.arange(16, dtype=np.int32) % 10
  outs = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    mesh = data.data_mesh(devices)
    state = data.replicate(train.init_state(init, tx, 0), mesh)
    step = train.make_train_step(train.network_model_fn(net), tx, cfg, (0.5,) * 3, (0.25,) * 3)
    batch = data.shard_batch((images, labels), mesh)
    state, metrics = step(state, *batch, jnp.float32(0.1))
    outs.append((jax.device_get(state["params"]), float(metrics["loss"])))
  assert outs[0][1] == pytest.approx(outs[1][1], rel=1e-5)
  for a, b in zip(jax.tree.leaves(outs[0][0]), jax.tree.leaves(outs[1][0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_command_line_options_reach_the_configs():
  """Every option of ``train`` and of a one-shot ``search`` lands in its config; unset ones keep the default."""
  args = cli.parse_args(["train", "--genotype", "DARTS_V2", "--no-flip", "--no-auxiliary", "--epochs", "3",
                         "--out", "x"])
  cfg = cli._train_config(args)
  assert (cfg.flip, cfg.auxiliary, cfg.epochs, cfg.cutout) == (False, False, 3, train.darts_eval_config().cutout)
  args = cli.parse_args(["search", "--method", "darts", "--order", "2", "--hessian", "finite_difference",
                         "--no-flip", "--out", "x"])
  cfg = cli._oneshot_config(args)
  assert (cfg.order, cfg.hessian, cfg.flip, cfg.epochs) == (2, "finite_difference", False, 50)
  assert (cfg.cost_weight, cfg.cost_metric) == (0.0, "params")
  args = cli.parse_args(["search", "--method", "gdas", "--cost-weight", "0.3", "--cost-metric", "flops"])
  cfg = cli._oneshot_config(args)
  assert (cfg.cost_weight, cfg.cost_metric) == (0.3, "flops")
  # No hand-kept list: any key of the config is an option (here one that never had its own flag).
  args = cli.parse_args(["search", "--method", "darts", "--eigen-iters=7", "--remat-edges=false"])
  cfg = cli._oneshot_config(args)
  assert (cfg.eigen_iters, cfg.remat_edges) == (7, False)
  args = cli.parse_args(["train", "--genotype", "DARTS_V2", "--auxiliary-weight", "0.5", "--keep_checkpoints", "4"])
  cfg = cli._train_config(args)
  assert (cfg.auxiliary_weight, cfg.keep_checkpoints) == (0.5, 4)
  with pytest.raises(NasjaxError, match="did you mean --learning-rate"):
    cli._train_config(cli.parse_args(["train", "--genotype", "DARTS_V2", "--learning-rat", "0.1"]))


def test_finished_stages_are_reused_only_under_the_same_settings(tmp_path):
  from nasjax.utils.stages import load_finished, write_json_atomic
  path = str(tmp_path / "stage.json")
  assert load_finished(path, {"a": 1}) is None
  write_json_atomic(path, {"settings": {"a": 1}, "accuracy": 0.9})
  assert load_finished(path, {"a": 1}) == {"settings": {"a": 1}, "accuracy": 0.9}
  assert load_finished(path, {"a": 2}) is None
  with open(path, "w") as f:
    f.write('{"settings": {"a": 1}, "accur')  # a process killed while writing
  assert load_finished(path, {"a": 1}) is None
  assert not os.path.exists(path + ".tmp")
