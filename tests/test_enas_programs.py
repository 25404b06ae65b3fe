"""ENAS' derive step and per-epoch record compile one program per kind, whatever the counts: scoring
runs one architecture on one batch at a time and sampling one architecture at a time (the greedy
architecture by the same program), with the values of the batched computations they replace."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax import data as nasdata
from nasjax.oneshot.enas import EnasSearch, demo_enas_config
from nasjax.spaces import get_space

# Values and compile counts are under test, not speed (conftest.py: XLA's optimisation passes off).
pytestmark = pytest.mark.usefixtures("fastest_compiles")


@pytest.fixture(scope="module")
def search_and_state():
  cfg = demo_enas_config("nb201")
  cfg.update(batch_size=8, derive_samples=4, controller_batch=2)
  search = EnasSearch(cfg, get_space("nb201"), (8, 8, 1), 4, (0.4,), (0.2,), shared_steps=4)
  return search, search.init_state(cfg.seed)


def test_derive_and_epoch_record_reuse_one_scoring_and_one_sampling_program(search_and_state, tiny_dataset):
  search, state = search_and_state
  xv, yv = tiny_dataset.x_train[:24], tiny_dataset.y_train[:24].astype(np.int32)
  one = search.derive(state, xv, yv, 1, 1, jax.random.key(0))      # the per-epoch record's derive
  many = search.derive(state, xv, yv, 5, 3, jax.random.key(1))     # the final derive: other counts
  greedy = search.most_likely(state["controller"]["params"])
  assert len(one) == 1 and len(many) == 5 and greedy.shape == (search.space.num_decisions,)
  # A batched program (the earlier vmap / lax.map form) compiled again for each count of samples.
  assert search._batch_accuracy._cache_size() == 1
  assert search._draw._cache_size() == 1


def test_sampled_greedy_and_scored_values_are_the_batched_ones(search_and_state, tiny_dataset):
  search, state = search_and_state
  policy, params = search.policy, state["controller"]["params"]
  key = jax.random.key(3)
  archs = search.sample_archs(params, key, 6)
  batched = jax.vmap(lambda k: policy.sample(params, k).arch)(jax.random.split(key, 6))
  np.testing.assert_array_equal(archs, np.asarray(batched))
  np.testing.assert_array_equal(search.most_likely(params), np.asarray(policy.most_likely(params)))

  x = nasdata.normalize(jnp.asarray(tiny_dataset.x_train[:16], jnp.float32), search.mean, search.std)
  images, labels = x.reshape(2, 8, 8, 8, 1), jnp.asarray(tiny_dataset.y_train[:16], jnp.int32).reshape(2, 8)
  scores = search.score(state["params"], state["batch_stats"], archs, images, labels)
  # The one-batch program itself is what the first test counts; here: each row is its arch's mean.
  expected = [np.mean([float(search._batch_accuracy(state["params"], state["batch_stats"], jnp.asarray(a),
                                                    images[j], labels[j])) for j in range(2)]) for a in archs]
  np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
  assert scores.dtype == np.float32 and scores.shape == (6,)


def test_depthwise_setting_reaches_the_shared_network_and_a_bad_one_is_refused():
  from nasjax.errors import NasjaxError
  from nasjax.oneshot.enas import check_config, enas_config, shared_network
  cfg = enas_config("enas_micro")
  assert cfg.dw_impl == "auto"
  cfg.update(dw_impl="dense")
  assert shared_network(get_space("enas_micro"), cfg, 10).impl.depthwise == "dense"
  assert shared_network(get_space("enas_macro"), cfg, 10).impl.depthwise == "dense"
  cfg.update(dw_impl="winograd")
  with pytest.raises(NasjaxError, match="dw_impl must be one of"):
    check_config(cfg)


def test_runs_from_before_dw_impl_keep_their_identity():
  from nasjax.oneshot.enas import identity_config
  cfg = demo_enas_config("enas_micro")
  before = {k: v for k, v in cfg.to_dict().items() if k != "dw_impl"}  # a run recorded before the key
  assert identity_config(cfg) == before
  cfg.dw_impl = "dense"
  assert identity_config(cfg) == dict(before, dw_impl="dense")
