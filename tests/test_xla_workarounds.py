import os
import subprocess
import sys

from nasjax import xla_workarounds


def test_flags_are_added_once_and_never_override_the_user():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_workarounds.apply(env) == ("--xla_force_host_platform_device_count=4 "
                                        "--xla_gpu_enable_triton_gemm=false")
  assert xla_workarounds.apply(env) == env["XLA_FLAGS"]  # idempotent
  user = {"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=true"}
  assert xla_workarounds.apply(user) == "--xla_gpu_enable_triton_gemm=true"
  assert user["XLA_FLAGS"] == "--xla_gpu_enable_triton_gemm=true"
  empty: dict = {}
  assert xla_workarounds.apply(empty) == "--xla_gpu_enable_triton_gemm=false"
  assert empty == {"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=false"}


def test_opt_out_keeps_flags_untouched():
  env = {"XLA_FLAGS": "--foo", xla_workarounds.ENV_KEEP: "1"}
  assert xla_workarounds.apply(env) == "--foo" and env["XLA_FLAGS"] == "--foo"
  unset = {xla_workarounds.ENV_KEEP: "1"}
  assert xla_workarounds.apply(unset) == "" and "XLA_FLAGS" not in unset


def test_apply_defaults_to_the_process_environment(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
  monkeypatch.delenv(xla_workarounds.ENV_KEEP, raising=False)
  assert xla_workarounds.apply() == "--xla_dump_to=/nowhere --xla_gpu_enable_triton_gemm=false"
  assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/nowhere --xla_gpu_enable_triton_gemm=false"


def test_importing_nasjax_leaves_the_environment_alone():
  # A fresh interpreter: this one imported nasjax long ago. JAX itself sets a couple of variables when
  # imported (TF_CPP_MIN_LOG_LEVEL, ...), so the third-party packages come first.
  code = ("import os, sys, jax, flax, optax\n"
          "before = dict(os.environ)\n"
          "import nasjax, nasjax.xla_workarounds, nasjax.nn.supernet, nasjax.nn.network, nasjax.utils.jit\n"
          "sys.exit(0 if dict(os.environ) == before else 1)\n")
  for flags in (None, "--xla_force_host_platform_device_count=2"):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_workarounds.ENV_KEEP)}
    if flags is not None:
      env["XLA_FLAGS"] = flags
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_command_applies_them_first(monkeypatch, capsys):
  from nasjax import cli
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
  monkeypatch.delenv(xla_workarounds.ENV_KEEP, raising=False)
  try:
    cli.main(["--help"])
  except SystemExit:
    pass
  capsys.readouterr()
  assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/nowhere --xla_gpu_enable_triton_gemm=false"
