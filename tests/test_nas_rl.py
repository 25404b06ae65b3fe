"""NAS-RL's conv space with separate stride height and width (Zoph & Le, ICLR 2017): encoding, notation,
the network's strides, the controller's emission order, the older five-field encoding left as it was, and
the registered name ``nas_rl_strided`` through the command line (search, train, eval, info)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import cli
from nasjax.errors import NasjaxError
from nasjax.nn.chain_network import chain_network, init_variables, plan_macs, plan_network
from nasjax.nn.count import count_macs
from nasjax.spaces import SPACE_NAMES, MacroSpace, get_space, nas_rl_space, nas_rl_strided_space
from nasjax.strategies.controller_layout import CHOICE, SKIP, controller_layout

# Values and files are under test, not speed: XLA's optimisation passes and its newer CPU fusion emitters are
# off in this module (conftest.py: fastest_compiles).
pytestmark = pytest.mark.usefixtures("fastest_compiles")

SPLIT = nas_rl_space(3, with_strides=True)
MIXED = MacroSpace(3, kernel_sizes=(1, 3), filters=(4, 8), strides=(1, 2), split_strides=True)


def test_split_strides_add_one_field_per_layer_and_keep_the_older_encoding():
  assert SPLIT.layer_width == 6 and SPLIT.fields[3:] == ("stride_h", "stride_w")
  assert SPLIT.num_choices[:6] == (1, 4, 4, 4, 3, 3) and SPLIT.num_decisions == 6 * 3 + 3
  assert [SPLIT.decision_name(d) for d in (4, 5, 18)] == ["layer 0 stride_h", "layer 0 stride_w",
                                                          "layer 1 skip from layer 0"]
  plain = nas_rl_space(3)
  assert plain.layer_width == 5 and plain.num_choices[:5] == (1, 4, 4, 4, 1) and plain.num_decisions == 18
  # The five-field notation and encoding of a space without the option are untouched.
  arch = plain.from_string("conv(h3,w5,f36,s1)|conv(h1,w1,f24,s1)<-0|conv(h7,w3,f64,s1)<-0,1")
  np.testing.assert_array_equal(arch, [0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 3, 1, 3, 0, 1, 1, 1])


def test_split_stride_notation_round_trips_and_describes_strides_as_pairs():
  s = "conv(h3,w5,f36,sh2,sw1)|conv(sw3,sh1,h1,w1,f24)<-0|conv(h7,w3,f64,sh1,sw1)<-0,1"
  arch = SPLIT.from_string(s)
  assert SPLIT.to_string(arch) == "conv(h3,w5,f36,sh2,sw1)|conv(h1,w1,f24,sh1,sw3)<-0|conv(h7,w3,f64,sh1,sw1)<-0,1"
  np.testing.assert_array_equal(arch[:12], [0, 1, 2, 1, 1, 0, 0, 0, 0, 0, 0, 2])
  assert SPLIT.describe(arch)[1] == {"type": "conv", "kernel": (1, 1), "filters": 24, "stride": (1, 3),
                                     "skips": [0]}
  for i in range(8):
    a = np.asarray(SPLIT.sample(jax.random.key(i)))
    np.testing.assert_array_equal(SPLIT.from_string(SPLIT.to_string(a)), a)
    np.testing.assert_array_equal(MIXED.from_string(MIXED.to_string(b := np.asarray(MIXED.sample(jax.random.key(i))))), b)
  pooled = MIXED.from_string("pool(h3,w1,sh1,sw2)|dense(f8)<-0|identity<-1")
  assert MIXED.to_string(pooled) == "pool(h3,w1,sh1,sw2)|dense(f8)<-0|identity<-1"
  assert MIXED.describe(pooled)[1]["stride"] is None


@pytest.mark.parametrize("text,match", [
    ("conv(h3,w5,f36,s2)|conv(h1,w1,f24,sh1,sw1)|conv(h1,w1,f24,sh1,sw1)", "does not take 's'"),
    ("conv(h3,w5,f36,sh2)|conv(h1,w1,f24,sh1,sw1)|conv(h1,w1,f24,sh1,sw1)", "missing sw"),
    ("conv(h3,w5,f36,sh2,sw4)|conv(h1,w1,f24,sh1,sw1)|conv(h1,w1,f24,sh1,sw1)", "stride_w 4 is not offered"),
    ("conv(h3,w5,f36,sh2,sh1)|conv(h1,w1,f24,sh1,sw1)|conv(h1,w1,f24,sh1,sw1)", "given twice"),
])
def test_split_stride_notation_refuses_bad_strings_in_one_line(text, match):
  with pytest.raises(NasjaxError, match=match):
    SPLIT.from_string(text)


def test_population_operators_stay_valid_and_ignored_strides_hold_zero():
  keys = jax.random.split(jax.random.key(0), 64)
  pop = jax.vmap(MIXED.sample)(keys)
  mutants = jax.vmap(MIXED.mutate)(keys, pop)
  children = jax.vmap(MIXED.crossover)(keys, pop, pop[::-1])
  for archs in (pop, mutants, children, jax.vmap(MIXED.neighbors)(pop[:8]).reshape(-1, MIXED.num_decisions)):
    assert bool(jnp.all(jax.vmap(MIXED.is_valid)(archs)))
  bad = np.asarray(MIXED.from_string("dense(f8)|identity|identity"))
  bad[MIXED.field_index(0, "stride_w")] = 1
  assert not bool(MIXED.is_valid(bad))
  with pytest.raises(NasjaxError, match="ignores stride_w"):
    MIXED.check(bad)


def test_network_convolves_and_pools_with_separate_stride_height_and_width():
  space = MacroSpace(3, layer_types=("conv", "pool"), kernel_sizes=(1, 3), filters=(4,), strides=(1, 2, 3),
                     split_strides=True)
  arch = space.from_string("conv(h3,w1,f4,sh2,sw1)|pool(h3,w3,sh1,sw3)|conv(h1,w3,f4,sh1,sw1)<-0")
  plans = plan_network(space, arch, (8, 9, 1))
  assert [p.out_hw for p in plans] == [(4, 9), (4, 3), (4, 9)]
  assert plans[0].stride == (2, 1) and plans[2].in_hw == (4, 9)  # layer 1 zero padded to layer 0's size
  net = chain_network(space, arch, 3, (8, 9, 1))
  variables = init_variables(net, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 9, 1)), jnp.float32)
  assert net.apply(variables, x).shape == (2, 3)
  assert count_macs(lambda v: net.apply(variables, v), x[:1]) == plan_macs(net.plan, 3)
  # A one-stride space's plan states its stride as a pair too.
  assert plan_network(nas_rl_space(2), nas_rl_space(2).sample(jax.random.key(0)), (8, 8, 1))[0].stride == (1, 1)


def test_controller_emits_each_layer_in_nas_rls_order():
  lay = controller_layout(SPLIT)
  emitted = [SPLIT.decision_name(int(d)).split(" ", 2)[2] for d in lay.order]
  fields = ["kernel_h", "kernel_w", "stride_h", "stride_w", "filters"]
  assert emitted == (["type"] + fields + ["type", "skip from layer 0"] + fields
                     + ["type", "skip from layer 0", "skip from layer 1"] + fields)
  # The anchor of layer k is the hidden state at its type step; a skip bit attends to its source's anchor.
  types = [SPLIT.field_index(k, "type") for k in range(3)]
  np.testing.assert_array_equal(lay.anchor_write[types], [0, 1, 2])
  assert np.all(np.delete(lay.anchor_write, types) == -1)
  skip = lay.kind == SKIP
  assert skip.sum() == 3 and np.all(lay.kind[~skip] == CHOICE)
  np.testing.assert_array_equal(lay.key_base[skip], [0, 0, 1])
  # Every field is gated by its own layer's type, in its column of the type table.
  for k in range(3):
    for f, name in enumerate(SPLIT.fields):
      d = SPLIT.field_index(k, name)
      assert lay.type_pos[d] == types[k] and lay.field[d] == f


def test_registry_builds_the_split_space_by_name():
  assert get_space("nas_rl", num_layers=3, with_strides=True) == SPLIT
  # Its own registered name, which is also the space's name: a result file or a worker rebuilds it by name.
  assert "nas_rl_strided" in SPACE_NAMES and SPLIT.name == "nas_rl_strided" and nas_rl_space(3).name == "nas_rl"
  assert get_space("nas_rl_strided", num_layers=3) == get_space("NASRL-strided", num_layers=3) == SPLIT
  assert get_space(SPLIT.name, num_layers=3) == SPLIT and nas_rl_strided_space() == nas_rl_space(15, True)
  assert get_space("nas_rl_strided").num_decisions == 6 * 15 + 105
  assert get_space("macro", num_layers=3, kernel_sizes=(1, 3), filters=(4, 8), strides=(1, 2),
                   split_strides=True) == MIXED


@pytest.mark.parametrize("name,options,match", [
    ("nas_rl_stride", {}, "unknown search space 'nas_rl_stride'; accepted: .*nas_rl_strided"),
    ("nas_rl_strided", {"with_strides": False}, "'nas_rl_strided' does not take with_strides; accepted: num_layers"),
    ("nas_rl_strided", {"num_layers": 0}, "num_layers must be a positive integer"),
])
def test_bad_names_and_options_of_the_strided_space_are_one_clear_error(name, options, match):
  with pytest.raises(NasjaxError, match=match):
    get_space(name, **options)


# ---------------------------------------------------------------------------------- the command line
STRIDED_ARCH = "conv(h3,w1,f24,sh2,sw1)|conv(h1,w3,f36,sh1,sw2)<-0|conv(h5,w1,f24,sh1,sw1)<-0,1"


@pytest.mark.parametrize("method", [
    ("--method", "nasrl"), ("--method", "nas_rl"), ("--strategy", "controller"), ("--strategy", "random"),
    ("--strategy", "regularized_evolution"), ("--strategy", "reinforce"), ("--strategy", "local_search")])
@pytest.mark.parametrize("estimator", ["train", "early_stopping", "morphism"])
def test_search_accepts_the_strided_space_wherever_it_accepts_nas_rl(method, estimator, capsys):
  """Every discrete search the NAS-RL space takes (the strategies and the estimators of chain networks)
  takes the strided one by name; --show-config runs every check and builds the strategy, nothing else."""
  argv = ["search", "--space", "nas_rl_strided", *method, "--estimator", estimator, "--show-config"]
  rc = cli.main(argv)
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  assert json.loads(captured.out)["command"] == "show-config"


def test_search_refuses_what_the_strided_space_cannot_do_in_one_line(capsys):
  for argv, message in (
      (["--space", "nas_rl_strided", "--method", "nasrl", "--estimator", "proxy:synflow"],
       "does not work on space 'nas_rl_strided'"),
      (["--space", "nas_rl_strides", "--method", "nasrl"], "unknown search space 'nas_rl_strides'")):
    rc = cli.main(["search", *argv, "--show-config"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_info_and_train_read_strided_architectures(tmp_path, write_tiny_npz, capsys):
  """``nasjax info|train|eval`` of a strided architecture: by --space nas_rl_strided, and from the
  result.json a search on that space writes (its ``space`` field names it)."""
  rc = cli.main(["info", "--space", "nas_rl_strided", "--genotype", STRIDED_ARCH, "--input-shape", "8,8,1",
                 "--classes", "4"])
  assert rc == 0, capsys.readouterr().err
  info = json.loads(capsys.readouterr().out)
  assert info["space"] == "nas_rl_strided" and info["num_layers"] == 3 and info["macs"] > 0
  # The older name still reads a strided string (result files written before the strided space had a name).
  rc = cli.main(["info", "--space", "nas_rl", "--genotype", STRIDED_ARCH, "--input-shape", "8,8,1", "--classes", "4"])
  assert rc == 0 and json.loads(capsys.readouterr().out)["params"] == info["params"]
  search = tmp_path / "search"
  search.mkdir()
  (search / "result.json").write_text(json.dumps({"command": "search", "strategy": "controller",
                                                  "space": "nas_rl_strided", "genotype": STRIDED_ARCH}))
  data = write_tiny_npz(tmp_path / "tiny.npz", 64, 16)
  out = tmp_path / "train"
  rc = cli.main(["train", "--genotype", str(search / "result.json"), "--config", "demo", "--epochs", "1",
                 "--batch-size", "32", "--data", data, "--out", str(out), "--quiet"])
  assert rc == 0, capsys.readouterr().err
  result = json.loads((out / "result.json").read_text())
  assert result["space"] == "nas_rl_strided" and result["genotype"] == STRIDED_ARCH
  assert result["params"] == info["params"]
  capsys.readouterr()
  rc = cli.main(["eval", "--checkpoint", str(out), "--out", str(tmp_path / "eval"), "--quiet"])
  assert rc == 0, capsys.readouterr().err
  ev = json.loads((tmp_path / "eval" / "result.json").read_text())
  assert ev["space"] == "nas_rl_strided"
  assert ev["metrics"]["test_accuracy"] == pytest.approx(result["metrics"]["eval_accuracy"], abs=1e-6)


@pytest.mark.parametrize("argv,message", [
    (["--space", "nas_rl_strided", "--genotype", "conv(h3,w3,f24,s1)|conv(h1,w3,f36,s1)<-0"],
     "not an architecture of the nas_rl_strided space"),
    (["--space", "nas_rl_strided", "--genotype", STRIDED_ARCH, "--channels", "16"], "filter counts"),
])
def test_train_refuses_bad_strided_input_in_one_line(tmp_path, capsys, argv, message):
  out = tmp_path / "out"
  rc = cli.main(["train", *argv, "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
  assert not out.exists()
