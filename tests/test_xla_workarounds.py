import os

from nasjax import xla_workarounds


def test_flags_are_added_once_and_never_override_the_user():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_workarounds.apply(env) == ("--xla_force_host_platform_device_count=4 "
                                        "--xla_gpu_enable_triton_gemm=false")
  assert xla_workarounds.apply(env) == env["XLA_FLAGS"]  # idempotent
  user = {"XLA_FLAGS": "--xla_gpu_enable_triton_gemm=true"}
  assert xla_workarounds.apply(user) == "--xla_gpu_enable_triton_gemm=true"
  empty: dict = {}
  assert xla_workarounds.apply(empty) == "--xla_gpu_enable_triton_gemm=false"


def test_opt_out_keeps_flags_untouched():
  env = {"XLA_FLAGS": "--foo", xla_workarounds.ENV_KEEP: "1"}
  assert xla_workarounds.apply(env) == "--foo" and env["XLA_FLAGS"] == "--foo"


def test_import_applied_the_flags_in_this_process():
  if os.environ.get(xla_workarounds.ENV_KEEP, "") in ("", "0"):
    assert "--xla_gpu_enable_triton_gemm" in os.environ["XLA_FLAGS"]
