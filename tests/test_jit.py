"""Per-compilation XLA options (nasjax.utils.jit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.utils import jit as nasjit


def test_presets_are_named_explicitly():
  assert nasjit.cpu_preset() == "CPU_OPT_PRESET_FAST_COMPILE"
  assert nasjit.cpu_preset("default") is None
  assert nasjit.cpu_preset("fast_runtime") == "CPU_OPT_PRESET_FAST_RUNTIME"
  with pytest.raises(NasjaxError, match="'O3' is not a CPU preset; accepted: fast_compile, default"):
    nasjit.cpu_preset("O3")


def test_the_environment_is_not_read(monkeypatch):
  # The knobs of earlier versions: none of them changes what a program is compiled with.
  for variable, value in (("NASJAX_CPU_PRESET", "default"), ("NASJAX_CPU_OPT_LEVEL", "1"),
                          ("NASJAX_CPU_VECTOR_WIDTH", "128")):
    monkeypatch.setenv(variable, value)
  assert nasjit.compiler_options("cpu") == {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE"}


def test_options_xla_refuses_are_dropped_not_fatal():
  assert nasjit._supported("cpu", (("xla_cpu_opt_preset", "CPU_OPT_PRESET_FAST_COMPILE"),))
  assert not nasjit._supported("cpu", (("xla_cpu_no_such_option", "1"),))
  assert not nasjit._supported("cpu", (("xla_cpu_opt_preset", "NOT_A_PRESET"),))


def test_cpu_programs_get_the_preset_and_other_backends_nothing():
  assert nasjit.compiler_options("cpu") == {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE"}
  assert nasjit.compiler_options("gpu") == {}
  assert nasjit.compiler_options("cpu", preset="default") == {}
  assert nasjit.compiler_options("cpu", "fast_runtime") == {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_RUNTIME"}
  with pytest.raises(NasjaxError, match="not a CPU preset"):
    nasjit.compiler_options("gpu", preset="fast")


def test_jit_with_options_computes_what_jax_jit_does():
  f = lambda x, y: jnp.tanh(x @ y).sum(0)  # noqa: E731
  x, y = jax.random.normal(jax.random.key(0), (2, 8, 8))
  want = jax.jit(f)(x, y)
  np.testing.assert_allclose(nasjit.jit_with_options(f)(x, y), want, rtol=1e-6)
  for preset in ("fast_compile", "default", "fast_runtime"):
    np.testing.assert_allclose(nasjit.jit_with_options(f, cpu_preset=preset)(x, y), want, rtol=1e-6)
  # The caller's own options win over nasjax's.
  g = nasjit.jit_with_options(f, compiler_options={"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_RUNTIME"})
  np.testing.assert_allclose(g(x, y), want, rtol=1e-6)
  with pytest.raises(Exception, match="xla_cpu_no_such_option"):
    nasjit.jit_with_options(f, compiler_options={"xla_cpu_no_such_option": "1"})(x, y)
  with pytest.raises(NasjaxError, match="not a CPU preset"):
    nasjit.jit_with_options(f, cpu_preset="O3")
