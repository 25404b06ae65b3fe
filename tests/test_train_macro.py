"""Retraining the non-cell spaces' architectures (enas_macro, macro, nas_rl): the ENAS stand-alone child,
exact resume, eval / info / export through the command line, and the refusals."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import NasjaxError, cli, train, train_macro
from nasjax.nn.count import count_params
from nasjax.nn.enas_macro_network import EnasMacroNetwork

pytestmark = pytest.mark.usefixtures("fastest_compiles")

ENAS_ARCH = "conv_3x3|sep_conv_5x5<-0|max_pool_3x3<-0,1"  # 3 layers: reductions after layers 0 and 1
ENAS_ARCH_4 = ENAS_ARCH + "|conv_5x5<-1"
NAS_RL_ARCH = "conv(h3,w3,f24,s1)|conv(h1,w3,f36,s1)<-0|conv(h5,w1,f24,s1)<-0,1"


def tiny_config(**kw):
  cfg = train.demo_config()
  cfg.update(epochs=2, batch_size=32, channels=4, eval_batch_size=16, **kw)
  return cfg


def test_enas_child_holds_only_the_chosen_ops_and_computes_the_shared_network():
  space, arch = train_macro.parse_architecture("enas_macro", ENAS_ARCH_4)
  assert space.num_layers == 4
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  shared = EnasMacroNetwork.for_space(space, channels=4, num_classes=4)
  shared_vars = shared.init(jax.random.key(1), x, arch)
  child = EnasMacroNetwork.for_space(space, channels=4, num_classes=4, fixed_arch=tuple(int(v) for v in arch))
  child_vars = jax.eval_shape(lambda k: child.init(k, x), jax.random.key(1))

  def subset(tree, like):  # the shared variables under the child's names
    return {k: subset(v, like[k]) if isinstance(v, dict) else v for k, v in tree.items() if k in like}

  layer_ops = {name: set(child_vars["params"][name]) for name in child_vars["params"] if name.startswith("layer_")}
  assert layer_ops == {f"layer_{k}": {f"ops_{op}"} for k, op in enumerate(
      ("conv_3x3", "sep_conv_5x5", "max_pool_3x3", "conv_5x5"))}
  # Same names and shapes as the shared network's, and with its weights the same function.
  restricted = subset(shared_vars, child_vars)
  assert jax.tree.map(jnp.shape, restricted) == jax.tree.map(lambda s: s.shape, child_vars)
  np.testing.assert_allclose(child.apply(restricted, x, train=False), shared.apply(shared_vars, x, arch, train=False),
                             rtol=1e-5, atol=1e-6)
  # The stand-alone child doubles its channels; its count is the shared network's count for the arch.
  net = train_macro.build(space, arch, 4, (8, 8, 3), channels=4)
  assert net.module.double_channels
  doubled = EnasMacroNetwork.for_space(space, channels=4, num_classes=4, double_channels=True)
  assert net.count()["params"] == int(doubled.count_params_for(arch, in_channels=3))
  with pytest.raises(NasjaxError, match="exactly one"):
    child.apply(restricted, x, arch)


@pytest.mark.parametrize("space_name,arch,kill", [
    ("enas_macro", ENAS_ARCH, {"stop_after_epochs": 1}),
    ("nas_rl", NAS_RL_ARCH, {"stop_after_steps": 5}),  # inside epoch 2, after its step-2 checkpoint
])
def test_killed_retraining_resumes_to_the_uninterrupted_run(tmp_path, tiny_dataset, space_name, arch, kill):
  space, a = train_macro.parse_architecture(space_name, arch)
  cfg = train_macro.protocol_config(tiny_config(checkpoint_every_steps=2), space, {})
  net = train_macro.for_dataset(space, a, tiny_dataset, cfg)
  identity = {"space": space.name, "genotype": net.genotype, "config": train.config_to_dict(cfg)}
  run = {"show_progress": False, "identity": identity}
  whole = train_macro.train_architecture(net, tiny_dataset, cfg, workdir=str(tmp_path / "whole"), **run)
  killed = train_macro.train_architecture(net, tiny_dataset, cfg, workdir=str(tmp_path / "killed"), **run, **kill)
  assert not killed.finished
  resumed = train_macro.train_architecture(net, tiny_dataset, cfg, workdir=str(tmp_path / "killed"), **run)
  assert resumed.finished and len(resumed.history) == 2
  for x, y in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert whole.history[-1]["eval_accuracy"] == resumed.history[-1]["eval_accuracy"]
  assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 2
  # Other settings in the same folder are refused, not continued.
  other = train_macro.protocol_config(tiny_config(checkpoint_every_steps=2, learning_rate=0.1), space, {})
  with pytest.raises(NasjaxError):
    train_macro.train_architecture(net, tiny_dataset, other, workdir=str(tmp_path / "killed"), show_progress=False,
                                   identity=dict(identity, config=train.config_to_dict(other)))


def test_search_result_retrains_evaluates_counts_and_exports(tmp_path, write_tiny_npz, capsys):
  data = write_tiny_npz(tmp_path / "tiny.npz", 64, 16)
  search = tmp_path / "search"
  search.mkdir()
  # What `nasjax search --method enas --space enas_macro` writes, in the fields train reads.
  (search / "result.json").write_text(json.dumps({"command": "search", "method": "enas", "space": "enas_macro",
                                                  "genotype": ENAS_ARCH}))
  out = tmp_path / "train"
  rc = cli.main(["train", "--genotype", str(search / "result.json"), "--config", "demo", "--epochs", "1",
                 "--channels", "4", "--batch-size", "32", "--data", data, "--out", str(out), "--quiet"])
  assert rc == 0, capsys.readouterr().err
  result = json.loads((out / "result.json").read_text())
  assert result["space"] == "enas_macro" and result["genotype"] == ENAS_ARCH and result["num_layers"] == 3
  assert "auxiliary" not in result["config"] and result["config"]["drop_path"] == 0.0
  assert 0.0 <= result["metrics"]["eval_accuracy"] <= 1.0
  capsys.readouterr()
  rc = cli.main(["eval", "--checkpoint", str(out), "--out", str(tmp_path / "eval"), "--quiet"])
  assert rc == 0, capsys.readouterr().err
  ev = json.loads((tmp_path / "eval" / "result.json").read_text())
  assert ev["metrics"]["test_accuracy"] == pytest.approx(result["metrics"]["eval_accuracy"], abs=1e-6)
  capsys.readouterr()
  rc = cli.main(["info", "--genotype", str(out / "result.json"), "--channels", "4", "--input-shape", "8,8,1",
                 "--classes", "4"])
  assert rc == 0, capsys.readouterr().err
  info = json.loads(capsys.readouterr().out)
  assert info["params"] == result["params"] and info["macs"] == result["macs"] > 0
  # The exported program computes the trained network (the checkpoint's own forward pass).
  from nasjax import export
  rc = cli.main(["export", "--checkpoint", str(out), "--format", "stablehlo", "--out", str(tmp_path / "net.shlo")])
  assert rc == 0, capsys.readouterr().err
  trained = export.load_trained(str(out))
  assert count_params(trained.variables["params"]) == result["params"]
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  program = jax.export.deserialize(bytearray((tmp_path / "net.shlo").read_bytes()))
  np.testing.assert_allclose(program.call(x), trained.forward(x), rtol=1e-5, atol=1e-5)


def test_info_counts_a_nas_rl_chain_network(capsys):
  rc = cli.main(["info", "--space", "nas_rl", "--genotype", NAS_RL_ARCH, "--input-shape", "8,8,1", "--classes", "4"])
  assert rc == 0, capsys.readouterr().err
  info = json.loads(capsys.readouterr().out)
  # conv 3x3 1->24, BN; conv 1x3 24->36 (a skip from layer 0 repeats the chain), BN; conv 5x1 (24+36)->24,
  # BN; classifier 24->4 with a bias. Every layer keeps the 8x8 map (stride 1).
  assert info["params"] == (9 * 24 + 48) + (3 * 24 * 36 + 72) + (5 * 60 * 24 + 48) + (24 * 4 + 4)
  assert info["macs"] == 64 * (9 * 24 + 3 * 24 * 36 + 5 * 60 * 24) + 24 * 4


@pytest.mark.parametrize("argv,message", [
    (["train", "--space", "nas_rl", "--genotype", ENAS_ARCH], "not an architecture of the nas_rl space"),
    (["train", "--space", "enas_macro", "--genotype", NAS_RL_ARCH], "not an architecture of the enas_macro space"),
    (["train", "--space", "enas_macro", "--genotype", "DARTS_V2"], "not an architecture of the enas_macro space"),
    (["train", "--genotype", ENAS_ARCH], "say which with --space"),
    (["train", "--space", "no_such_space", "--genotype", ENAS_ARCH], "unknown search space"),
    (["train", "--space", "nb201", "--genotype", "|nor_conv_3x3~0|"], "build networks for"),
    (["train", "--space", "enas_macro", "--genotype", ENAS_ARCH, "--drop-path", "0.2"], "no drop-path"),
    (["train", "--space", "enas_macro", "--genotype", ENAS_ARCH, "--layers", "8"], "its depth is the architecture's"),
    (["train", "--space", "nas_rl", "--genotype", NAS_RL_ARCH, "--channels", "16"], "filter counts"),
    (["train", "--space", "nas_rl", "--genotype", NAS_RL_ARCH, "--auxiliary"], "auxiliary head"),
    (["info", "--space", "nas_rl", "--genotype", NAS_RL_ARCH, "--stem", "imagenet"], "its own stem"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, argv, message):
  out = tmp_path / "out"
  rc = cli.main(argv + (["--out", str(out)] if argv[0] == "train" else []))
  err = capsys.readouterr().err
  assert rc == 2 and message in err, err
  assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
  assert not out.exists()


@pytest.mark.parametrize("written,message", [
    ({"command": "eval", "space": "enas_macro", "genotype": ENAS_ARCH}, "written by `nasjax eval`"),
    ({"command": "search", "space": "nb201", "genotype": "|nor_conv_3x3~0|"}, "build networks for"),
    ({"command": "search", "space": "enas_macro", "genotype": NAS_RL_ARCH}, "not an architecture of the enas_macro"),
])
def test_a_result_file_nasjax_cannot_retrain_is_refused(tmp_path, capsys, written, message):
  path = tmp_path / "result.json"
  path.write_text(json.dumps(written))
  rc = cli.main(["train", "--genotype", str(path), "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and "Traceback" not in err, err
  rc = cli.main(["train", "--space", "nas_rl", "--genotype", str(path), "--out", str(tmp_path / "out")])
  assert rc == 2 and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("space_name,arch", [
    ("enas_macro", "conv_3x3|conv_5x5<-0|sep_conv_3x3|sep_conv_5x5<-1,2|avg_pool_3x3<-0|max_pool_3x3<-3"),
    ("macro", "conv(h3,w5,f24,s2)|pool(h3,w3,s2)<-0|identity<-0|conv(h1,w1,f36,s1)<-1|dense(f24)<-2"),
])
def test_onnx_export_computes_the_network(space_name, arch):
  """Every ENAS macro op and every chain layer type through jax2onnx and onnxruntime (~15 CPU s)."""
  pytest.importorskip("jax2onnx")
  ort = pytest.importorskip("onnxruntime")
  from nasjax import export
  space, a = train_macro.parse_architecture(space_name, arch)
  net = train_macro.build(space, a, 4, (16, 16, 3), channels=4)
  variables = net.init(jax.random.key(0))
  # Non-trivial BatchNorm statistics, so the inference-mode normalisation is checked too.
  variables = dict(variables, batch_stats=jax.tree.map(lambda v: v + 0.25, variables["batch_stats"]))
  trained = train_macro.TrainedArchitecture(net.genotype, net.module, variables, net.input_shape, 4, 0)
  session = ort.InferenceSession(export.to_onnx(trained))
  x = np.asarray(jax.random.normal(jax.random.key(1), (3, 16, 16, 3)))
  got = session.run(None, {session.get_inputs()[0].name: x})[0]
  np.testing.assert_allclose(got, trained.forward(jnp.asarray(x)), rtol=1e-4, atol=1e-5)
