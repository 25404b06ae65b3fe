"""Per-compilation XLA options (nasjax.utils.jit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.errors import NasjaxError
from nasjax.utils import jit as nasjit


def test_preset_comes_from_the_environment():
  assert nasjit.cpu_preset({}) == "CPU_OPT_PRESET_FAST_COMPILE"
  assert nasjit.cpu_preset({nasjit.ENV_PRESET: "default"}) is None
  assert nasjit.cpu_preset({nasjit.ENV_PRESET: " Fast_Runtime "}) == "CPU_OPT_PRESET_FAST_RUNTIME"
  with pytest.raises(NasjaxError, match="fast_compile, default, fast_runtime"):
    nasjit.cpu_preset({nasjit.ENV_PRESET: "O3"})


def test_backend_opt_level_comes_from_the_environment(monkeypatch):
  assert nasjit.cpu_opt_level({}) is None and nasjit.cpu_opt_level({nasjit.ENV_OPT_LEVEL: " "}) is None
  assert nasjit.cpu_opt_level({nasjit.ENV_OPT_LEVEL: " 1 "}) == 1
  for bad in ("4", "-1", "O2", "1.0"):
    with pytest.raises(NasjaxError, match="0, 1, 2, 3"):
      nasjit.cpu_opt_level({nasjit.ENV_OPT_LEVEL: bad})
  monkeypatch.delenv(nasjit.ENV_PRESET, raising=False)
  monkeypatch.delenv(nasjit.ENV_VECTOR_WIDTH, raising=False)
  monkeypatch.setenv(nasjit.ENV_OPT_LEVEL, "1")
  assert nasjit.compiler_options("cpu") == {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE",
                                            "xla_backend_optimization_level": 1}
  assert nasjit.compiler_options("gpu") == {}
  monkeypatch.setenv(nasjit.ENV_PRESET, "default")
  assert nasjit.compiler_options("cpu") == {"xla_backend_optimization_level": 1}


def test_vector_width_comes_from_the_environment(monkeypatch):
  assert nasjit.cpu_vector_width({}) is None
  assert nasjit.cpu_vector_width({nasjit.ENV_VECTOR_WIDTH: " 256 "}) == 256
  assert nasjit.cpu_vector_width({nasjit.ENV_VECTOR_WIDTH: "0"}) is None
  for bad in ("64", "-1", "wide", "128.0"):
    with pytest.raises(NasjaxError, match="0, 128, 256, 512"):
      nasjit.cpu_vector_width({nasjit.ENV_VECTOR_WIDTH: bad})
  monkeypatch.delenv(nasjit.ENV_PRESET, raising=False)
  monkeypatch.delenv(nasjit.ENV_OPT_LEVEL, raising=False)
  monkeypatch.delenv(nasjit.ENV_VECTOR_WIDTH, raising=False)
  assert "xla_cpu_prefer_vector_width" not in nasjit.compiler_options("cpu")
  monkeypatch.setenv(nasjit.ENV_VECTOR_WIDTH, "128")
  assert nasjit.compiler_options("cpu")["xla_cpu_prefer_vector_width"] == 128
  assert nasjit.compiler_options("gpu") == {}
  monkeypatch.setenv(nasjit.ENV_VECTOR_WIDTH, "0")
  assert "xla_cpu_prefer_vector_width" not in nasjit.compiler_options("cpu")


def test_options_xla_refuses_are_dropped_not_fatal():
  assert nasjit._supported("cpu", (("xla_cpu_opt_preset", "CPU_OPT_PRESET_FAST_COMPILE"),))
  assert not nasjit._supported("cpu", (("xla_cpu_no_such_option", "1"),))
  assert not nasjit._supported("cpu", (("xla_cpu_opt_preset", "NOT_A_PRESET"),))


def test_cpu_programs_get_the_preset_and_other_backends_nothing(monkeypatch):
  monkeypatch.delenv(nasjit.ENV_PRESET, raising=False)
  monkeypatch.delenv(nasjit.ENV_OPT_LEVEL, raising=False)
  monkeypatch.delenv(nasjit.ENV_VECTOR_WIDTH, raising=False)
  assert nasjit.compiler_options("cpu") == {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE"}
  assert nasjit.compiler_options("gpu") == {}
  monkeypatch.setenv(nasjit.ENV_PRESET, "default")
  assert nasjit.compiler_options("cpu") == {}


def test_jit_with_options_computes_what_jax_jit_does(monkeypatch):
  f = lambda x, y: jnp.tanh(x @ y).sum(0)  # noqa: E731
  x, y = jax.random.normal(jax.random.key(0), (2, 8, 8))
  want = jax.jit(f)(x, y)
  for preset in ("fast_compile", "default", "fast_runtime"):
    monkeypatch.setenv(nasjit.ENV_PRESET, preset)
    np.testing.assert_allclose(nasjit.jit_with_options(f)(x, y), want, rtol=1e-6)
  for level in ("0", "1"):
    monkeypatch.setenv(nasjit.ENV_OPT_LEVEL, level)
    np.testing.assert_allclose(nasjit.jit_with_options(f)(x, y), want, rtol=1e-6)
  monkeypatch.delenv(nasjit.ENV_OPT_LEVEL)
  for width in ("0", "128", "256"):
    monkeypatch.setenv(nasjit.ENV_VECTOR_WIDTH, width)
    np.testing.assert_allclose(nasjit.jit_with_options(f)(x, y), want, rtol=1e-6)
  monkeypatch.delenv(nasjit.ENV_VECTOR_WIDTH)
  # The caller's own options win over nasjax's.
  monkeypatch.setenv(nasjit.ENV_PRESET, "fast_compile")
  g = nasjit.jit_with_options(f, compiler_options={"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_RUNTIME"})
  np.testing.assert_allclose(g(x, y), want, rtol=1e-6)
  with pytest.raises(Exception, match="xla_cpu_no_such_option"):
    nasjit.jit_with_options(f, compiler_options={"xla_cpu_no_such_option": "1"})(x, y)
