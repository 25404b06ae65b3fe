"""Transfer by stacking (``train --stem imagenet``, ``info --stem``) and ``nasjax export``: round trips of the
StableHLO and ONNX files against nasjax's own network, and bad input."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from nasjax import cli, export
from nasjax.nn.count import count_params
from nasjax.nn.network import Network

# One worker trains the checkpoint once for the whole module (and warms jax2onnx up once).
# Slow as a module: a trained checkpoint fixture and jax2onnx's first conversion cost ~40 CPU s together.
pytestmark = [pytest.mark.xdist_group("export"), pytest.mark.usefixtures("fast_compiles"), pytest.mark.slow]

# Every DARTS op, in both cell types, at strides 1 and 2.
ALL_OPS = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_5x5', 1), ('dil_conv_3x3', 0), ('dil_conv_5x5', 2), "
           "('max_pool_3x3', 1), ('avg_pool_3x3', 0), ('skip_connect', 3), ('sep_conv_3x3', 4)], "
           "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('avg_pool_3x3', 1), ('skip_connect', 2), "
           "('sep_conv_5x5', 1), ('dil_conv_3x3', 0), ('dil_conv_5x5', 1), ('sep_conv_3x3', 3), "
           "('skip_connect', 0)], reduce_concat=[2, 3, 4, 5])")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A `nasjax train` directory: the searched cell stacked on DARTS' ImageNet stem (three stride-2 convs),
  trained one step on 32x32 grey images, so the cells run on 4x4, 2x2 and 1x1 maps."""
  root = tmp_path_factory.mktemp("export")
  rng = np.random.default_rng(0)
  y = np.arange(48) % 4
  x = np.clip(rng.random((48, 32, 32, 1)) * 96 + y[:, None, None, None] * 48, 0, 255).astype(np.uint8)
  np.savez(root / "data.npz", x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
  (root / "search").mkdir()
  (root / "search" / "result.json").write_text(json.dumps({"genotype": ALL_OPS}))
  out = root / "train"
  rc = cli.main(["train", "--genotype", str(root / "search" / "result.json"), "--config", "demo", "--stem",
                 "imagenet", "--channels", "4", "--layers", "3", "--epochs", "1", "--batch-size", "32",
                 "--eval-batch-size", "16", "--data", str(root / "data.npz"), "--out", str(out), "--quiet"])
  assert rc == 0
  return out


@pytest.fixture(scope="module")
def reference(trained):
  """nasjax's own jitted forward pass of the checkpoint (its default implementation on this backend)."""
  loaded = export.load_trained(str(trained))
  net = Network(loaded.genotype, loaded.network.channels, loaded.network.layers, loaded.num_classes,
                auxiliary=False, stem=loaded.network.stem)
  forward = jax.jit(lambda x: net.apply(loaded.variables, x, train=False)[0])
  return lambda x: np.asarray(forward(x))


def test_transfer_trains_the_stacked_imagenet_network_and_info_counts_it(trained, capsys):
  result = json.loads((trained / "result.json").read_text())
  assert result["config"]["stem"] == "imagenet" and result["input_shape"] == [32, 32, 1]
  loaded = export.load_trained(str(trained))
  assert "stem0_conv0" in loaded.variables["params"] and "stem_conv" not in loaded.variables["params"]
  capsys.readouterr()
  rc = cli.main(["info", "--genotype", str(trained / "result.json"), "--stem", "imagenet", "--channels", "4",
                 "--layers", "3", "--input-shape", "32,32,1", "--classes", "4", "--no-auxiliary"])
  assert rc == 0
  info = json.loads(capsys.readouterr().out)
  assert info["stem"] == "imagenet" and info["params"] == count_params(loaded.variables["params"])
  # DARTS' ImageNet network (Liu et al. 2019, table 3: 4.7M parameters, 574M multiply-adds); the MACs here
  # count convolutions and dense layers only.
  rc = cli.main(["info", "--genotype", "DARTS_V2", "--stem", "imagenet", "--channels", "48", "--layers", "14",
                 "--input-shape", "224,224,3", "--classes", "1000"])
  assert rc == 0
  info = json.loads(capsys.readouterr().out)
  assert info["params"] == 4_718_752 and info["macs"] == 529_911_552


def test_stablehlo_round_trip(trained, reference, tmp_path, capsys):
  out = tmp_path / "net.stablehlo"
  rc = cli.main(["export", "--checkpoint", str(trained), "--format", "stablehlo", "--out", str(out)])
  assert rc == 0, capsys.readouterr().err
  summary = json.loads(capsys.readouterr().out)
  assert summary["bytes"] == out.stat().st_size
  exported = jax.export.deserialize(bytearray(out.read_bytes()))
  rng = np.random.default_rng(1)
  for batch in (3, 1):  # the batch dimension is symbolic
    x = rng.normal(size=(batch, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(exported.call(x)), reference(x), rtol=0, atol=1e-5)


def test_onnx_round_trip(trained, reference, tmp_path, capsys):
  pytest.importorskip("jax2onnx")
  ort = pytest.importorskip("onnxruntime")
  out = tmp_path / "net.onnx"
  rc = cli.main(["export", "--checkpoint", str(trained), "--format", "onnx", "--out", str(out)])
  assert rc == 0, capsys.readouterr().err
  session = ort.InferenceSession(str(out))
  name = session.get_inputs()[0].name
  x = np.random.default_rng(2).normal(size=(3, 32, 32, 1)).astype(np.float32)
  np.testing.assert_allclose(session.run(None, {name: x})[0], reference(x), rtol=0, atol=1e-5)


def _edit_result(trained, tmp_path, **changes):
  copy = tmp_path / "copy"
  shutil.copytree(trained, copy)
  result = json.loads((copy / "result.json").read_text())
  for key, value in changes.items():
    if key in result["config"]:
      result["config"][key] = value
    else:
      result[key] = value
  (copy / "result.json").write_text(json.dumps(result))
  return copy


@pytest.mark.parametrize("case, message", [
    ("not_a_run", "is not a finished `nasjax train` directory"),
    ("other_genotype", "was trained on genotype"),
    ("other_channels", "does not match the network of its genotype"),
    ("unknown_format", "unknown export format 'tflite'"),
    ("unchecked_onnx_op", "no checked ONNX conversion for op sep_conv_3x3"),
])
def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys, monkeypatch, case, message):
  checkpoint, fmt = trained, "stablehlo"
  if case == "not_a_run":
    checkpoint = tmp_path
  elif case == "other_genotype":
    from nasjax.spaces import get_genotype
    checkpoint = _edit_result(trained, tmp_path, genotype=get_genotype("DARTS_V2").to_string())
  elif case == "other_channels":
    checkpoint = _edit_result(trained, tmp_path, channels=6)
  elif case == "unknown_format":
    fmt = "tflite"
  else:
    pytest.importorskip("jax2onnx")
    fmt = "onnx"
    monkeypatch.setattr(export, "ONNX_OPS", tuple(op for op in export.ONNX_OPS if op != "sep_conv_3x3"))
  out = tmp_path / "net.out"
  rc = cli.main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out)])
  err = capsys.readouterr().err
  assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
  assert not out.exists() and not list(tmp_path.glob(".export-*"))


def test_an_existing_out_file_is_kept_unless_forced(trained, tmp_path, capsys):
  out = tmp_path / "net.stablehlo"
  out.write_bytes(b"keep me")
  args = ["export", "--checkpoint", str(trained), "--format", "stablehlo", "--out", str(out)]
  assert cli.main(args) == 2 and "already exists" in capsys.readouterr().err
  assert out.read_bytes() == b"keep me"
  assert cli.main(args + ["--force"]) == 0
  assert jax.export.deserialize(bytearray(out.read_bytes())).in_avals[0].shape[1:] == (32, 32, 1)


@pytest.mark.slow
def test_every_checked_onnx_op_converts_exactly():
  """Each op of :data:`nasjax.export.ONNX_OPS` alone, at strides 1 and 2, through jax2onnx and onnxruntime."""
  pytest.importorskip("jax2onnx")
  ort = pytest.importorskip("onnxruntime")
  from jax2onnx import to_onnx

  from nasjax.nn.ops import XLA_IMPL, OpConfig, make_op
  x = np.random.default_rng(3).normal(size=(2, 8, 8, 4)).astype(np.float32)
  for op in export.ONNX_OPS:
    for stride in (1, 2):
      module = make_op(op, OpConfig(4, stride, True, XLA_IMPL))
      variables = module.init(jax.random.key(0), x, False)
      # Non-trivial BatchNorm statistics and scales, so the inference-mode normalisation is checked too.
      variables = jax.tree.map(lambda a: a + 0.3 * np.abs(np.random.default_rng(4).normal(size=a.shape)),
                               variables)
      fn = lambda x, module=module, variables=variables: module.apply(variables, x, False)
      model = to_onnx(fn, [("batch", 8, 8, 4)])
      session = ort.InferenceSession(model.SerializeToString())
      got = session.run(None, {session.get_inputs()[0].name: x})[0]
      np.testing.assert_allclose(got, np.asarray(fn(x)), rtol=1e-6, atol=1e-5, err_msg=f"{op} stride {stride}")
