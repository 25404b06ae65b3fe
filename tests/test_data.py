"""Tests of nasjax.data: loaders, augmentation, splitting, batching, sharding.

The sharding tests need several devices; CI runs the suite with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (it must be set before JAX initialises), and they skip
otherwise.
"""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.data import (
    Batcher,
    Dataset,
    augment_batch,
    cutout,
    data_mesh,
    load_dataset,
    normalize,
    random_crop,
    random_flip,
    replicate,
    shard_batch,
    subset,
    train_valid_split,
)
from nasjax.errors import NasjaxError

# Values are under test, not speed: XLA's optimisation passes are off in this module (conftest.py).
pytestmark = pytest.mark.usefixtures("fastest_compiles")


# --------------------------------------------------------------------------------------------------
# sources


@pytest.fixture
def embedded(embedded_dataset):  # conftest.py: loaded once per worker
  return embedded_dataset


def test_embedded_loads_offline_balanced(embedded):
  ds = embedded
  assert isinstance(ds, Dataset)
  assert ds.name == "fashion_mnist_small"
  assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
  assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  assert ds.input_shape == (28, 28, 1)
  assert ds.num_classes == 10
  np.testing.assert_array_equal(np.bincount(ds.y_train), [400] * 10)
  np.testing.assert_array_equal(np.bincount(ds.y_test), [100] * 10)
  x = ds.x_train.astype(np.float64) / 255.0
  assert len(ds.mean) == len(ds.std) == 1
  np.testing.assert_allclose(ds.mean, [x.mean()], rtol=1e-6)
  np.testing.assert_allclose(ds.std, [x.std()], rtol=1e-6)
  # Full Fashion-MNIST: mean 0.2861, std 0.3528; a random balanced subset is close.
  assert abs(ds.mean[0] - 0.286) < 0.01 and abs(ds.std[0] - 0.353) < 0.01


def test_embedded_alias_and_provenance():
  ds = load_dataset("fashion_mnist_small")
  assert ds.x_train.shape[0] == 4000
  path = pathlib.Path(__file__).parents[1] / "nasjax" / "data" / "fashion_mnist_small.npz"
  assert path.stat().st_size < 5_000_000
  with np.load(path, allow_pickle=False) as f:
    prov = "\n".join(f["provenance"].tolist())
    assert f["x_train"].shape == (4000, 28, 28)
  assert "Xiao, Rasul & Vollgraf 2017" in prov and "MIT" in prov and "sha256" in prov


def _write(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def _good_arrays(rng, n_train=12, n_test=6, shape=(8, 8, 3)):
  return dict(
      x_train=rng.integers(0, 256, (n_train,) + shape, dtype=np.uint8),
      y_train=np.arange(n_train) % 3,
      x_test=rng.integers(0, 256, (n_test,) + shape, dtype=np.uint8),
      y_test=np.arange(n_test) % 3,
  )


def test_npz_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  arrays = _good_arrays(rng)
  path = _write(tmp_path / "mine.npz", extra=np.zeros(3), **arrays)
  ds = load_dataset(path)
  assert ds.name == "mine" and ds.num_classes == 3 and ds.input_shape == (8, 8, 3)
  for k in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(ds, k), arrays[k])
  assert len(ds.mean) == 3
  np.testing.assert_allclose(ds.mean, (arrays["x_train"] / 255.0).mean(axis=(0, 1, 2)), rtol=1e-6)


def test_fingerprint_follows_contents_not_paths(tmp_path):
  """Checkpoints record this: another spelling of the same file matches, one changed pixel does not."""
  arrays = _good_arrays(np.random.default_rng(0))
  path = _write(tmp_path / "mine.npz", **arrays)
  (tmp_path / "sub").mkdir()
  same = load_dataset(str(tmp_path / "sub" / ".." / "mine.npz")).fingerprint
  assert load_dataset(path).fingerprint == same
  assert same["name"] == "mine" and same["train_images"] == len(arrays["x_train"]) and len(same["sha256"]) == 64
  arrays["x_test"][0, 0, 0, 0] ^= 1
  (tmp_path / "other").mkdir()
  changed = load_dataset(_write(tmp_path / "other" / "mine.npz", **arrays)).fingerprint
  assert changed["sha256"] != same["sha256"] and changed["name"] == same["name"]


def test_npz_grey_float_gets_channel_axis(tmp_path):
  rng = np.random.default_rng(1)
  path = _write(tmp_path / "grey.npz", x_train=rng.random((5, 6, 7)), y_train=np.array([0, 1, 2, 3, 4.0]),
                x_test=rng.random((2, 6, 7)), y_test=np.array([0, 9], np.uint8))
  ds = load_dataset(path)
  assert ds.x_train.shape == (5, 6, 7, 1) and ds.x_train.dtype == np.float32
  assert ds.num_classes == 10 and ds.y_train.dtype == np.int32


class _Trap:
  """Unpickling this creates a marker file, which proves that the loader unpickled."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _bad_cases(tmp_path):
  rng = np.random.default_rng(2)
  good = _good_arrays(rng)

  def with_(**changes):
    a = dict(good)
    a.update(changes)
    return {k: v for k, v in a.items() if v is not None}

  return {
      "missing key": (with_(y_test=None), "missing y_test"),
      "fractional labels": (with_(y_train=np.linspace(0, 2, 12)), "non-integer"),
      "wrong rank": (with_(x_train=np.zeros((12, 64), np.uint8)), "3-D (N, H, W) or 4-D"),
      "too many channels": (with_(x_train=np.zeros((12, 8, 8, 5), np.uint8)), "1 to 4"),
      "mismatched N": (with_(y_train=np.arange(11) % 3), "12 images but y_train has 11"),
      "train/test shape": (with_(x_test=np.zeros((6, 8, 9, 3), np.uint8)), "same shape"),
      "negative labels": (with_(y_test=np.array([0, 1, -1, 2, 0, 1])), "negative"),
      "empty": (with_(x_test=np.zeros((0, 8, 8, 3), np.uint8), y_test=np.zeros((0,), int)), "empty"),
      "2-D labels": (with_(y_train=np.zeros((12, 1), int)), "1-D"),
      "string labels": (with_(y_train=np.array(["a"] * 12)), "integer"),
      "float pixels 0..255": (with_(x_train=np.full((12, 8, 8, 3), 200.0)), "[0, 1]"),
  }


@pytest.mark.parametrize("case", [
    "missing key", "fractional labels", "wrong rank", "too many channels", "mismatched N",
    "train/test shape", "negative labels", "empty", "2-D labels", "string labels", "float pixels 0..255",
])
def test_bad_npz_raises(tmp_path, case):
  arrays, expected = _bad_cases(tmp_path)[case]
  path = _write(tmp_path / "bad.npz", **arrays)
  with pytest.raises(NasjaxError) as err:
    load_dataset(path)
  assert "bad.npz" in str(err.value) and expected in str(err.value)


def test_pickled_object_array_is_not_unpickled(tmp_path):
  marker = tmp_path / "unpickled"
  arrays = _good_arrays(np.random.default_rng(3))
  arrays["y_train"] = np.array([_Trap(str(marker))] * 12, dtype=object)
  path = _write(tmp_path / "evil.npz", **arrays)
  with pytest.raises(NasjaxError, match="pickle"):
    load_dataset(path)
  assert not marker.exists()


def test_pickle_file_and_missing_file(tmp_path):
  marker = tmp_path / "unpickled"
  path = tmp_path / "evil.npz"
  np.save(path, np.array([_Trap(str(marker))], dtype=object))  # an .npy pickle under an .npz name
  path = path.with_name("evil.npz.npy").rename(path)
  with pytest.raises(NasjaxError):
    load_dataset(str(path))
  assert not marker.exists()
  np.save(tmp_path / "plain.npy", np.zeros((3, 3)))
  (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
  with pytest.raises(NasjaxError, match="single array"):
    load_dataset(str(tmp_path / "plain.npz"))
  with pytest.raises(NasjaxError, match="does not exist"):
    load_dataset(str(tmp_path / "nope.npz"))
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(NasjaxError, match="junk.npz"):
    load_dataset(str(tmp_path / "junk.npz"))


@pytest.mark.parametrize("spec", ["", "imagenet_of_my_dreams", "data.csv", "tfds:"])
def test_unknown_dataset(spec):
  with pytest.raises(NasjaxError) as err:
    load_dataset(spec)
  assert "embedded" in str(err.value) or "tfds:cifar10" in str(err.value)


def test_tfds_unknown_name():
  with pytest.raises(NasjaxError, match="no data set named 'not_a_real_dataset_xyz'"):
    load_dataset("tfds:not_a_real_dataset_xyz")


def test_tfds_not_prepared(tmp_path):
  with pytest.raises(NasjaxError) as err:
    load_dataset("cifar10", data_dir=str(tmp_path))
  msg = str(err.value)
  assert "not prepared" in msg and str(tmp_path) in msg and "tfds build cifar10" in msg and ".npz" in msg


@pytest.mark.parametrize("spec,shape", [("tfds:cifar10", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_tfds_data_source_mocked(spec, shape):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = load_dataset(spec)
  assert ds.x_train.shape == (6,) + shape and ds.x_test.shape == (6,) + shape
  assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
  assert ds.num_classes == 10 and len(ds.mean) == shape[-1]
  assert ds.y_train.min() >= 0 and ds.y_train.max() < 10


# --------------------------------------------------------------------------------------------------
# augmentation


def _images(dtype=np.uint8, n=6, h=12, w=10, c=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(1, 256, (n, h, w, c))  # no zeros, so cutout pixels are recognisable
  return jnp.asarray(x.astype(dtype) if dtype == np.uint8 else (x / 255.0).astype(dtype))


class AugmentTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_shapes_dtypes(self):
    key = jax.random.key(0)
    for dtype in (np.uint8, np.float32):
      x = _images(dtype)
      crop = self.variant(random_crop, static_argnames="padding")
      flip = self.variant(random_flip)
      cut = self.variant(cutout, static_argnames="size")
      for out in (crop(key, x, padding=4), flip(key, x), cut(key, x, size=4)):
        chex.assert_shape(out, x.shape)
        chex.assert_type(out, x.dtype)
    aug = self.variant(augment_batch, static_argnames=("crop_padding", "flip", "cutout_size"))
    out = aug(key, _images(np.float32), crop_padding=2, flip=True, cutout_size=4)
    chex.assert_shape(out, (6, 12, 10, 3))
    chex.assert_type(out, jnp.float32)

  @chex.variants(with_jit=True, without_jit=True)
  def test_crop_padding_zero_is_identity(self):
    x = _images()
    out = self.variant(random_crop, static_argnames="padding")(jax.random.key(1), x, padding=0)
    np.testing.assert_array_equal(out, x)

  @chex.variants(with_jit=True, without_jit=True)
  def test_crop_is_a_shifted_window(self):
    x = _images(n=16)
    out = np.asarray(self.variant(random_crop, static_argnames="padding")(jax.random.key(2), x, padding=2))
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = set()
    for i in range(16):
      hits = [(dy, dx) for dy in range(5) for dx in range(5)
              if np.array_equal(padded[i, dy:dy + 12, dx:dx + 10], out[i])]
      assert hits, f"image {i} is not a window of its padded original"
      offsets.add(hits[0])
    assert len(offsets) > 1  # offsets are per image

  @chex.variants(with_jit=True, without_jit=True)
  def test_flip_twice_same_key_is_identity(self):
    x = _images(n=16)
    flip = self.variant(random_flip)
    key = jax.random.key(3)
    once = np.asarray(flip(key, x))
    np.testing.assert_array_equal(flip(key, once), x)
    flipped = [np.array_equal(once[i], np.asarray(x)[i, :, ::-1]) for i in range(16)]
    kept = [np.array_equal(once[i], np.asarray(x)[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)

  @chex.variants(with_jit=True, without_jit=True)
  def test_cutout_bounded_and_deterministic(self):
    x = _images(n=32)
    cut = self.variant(cutout, static_argnames="size")
    size = 5
    a = np.asarray(cut(jax.random.key(4), x, size=size))
    b = np.asarray(cut(jax.random.key(4), x, size=size))
    np.testing.assert_array_equal(a, b)
    zeroed = (a == 0).all(axis=-1).sum(axis=(1, 2))
    assert (zeroed <= size * size).all() and (zeroed > 0).all()
    assert (zeroed == size * size).any()  # unclipped squares are exactly size x size
    changed = a != np.asarray(x)
    assert not (changed & (a != 0)).any()  # only zeroing, in all channels at once
    c = np.asarray(cut(jax.random.key(5), x, size=size))
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(cut(jax.random.key(4), x, size=0), x)

  @chex.variants(with_jit=True, without_jit=True)
  def test_normalize(self):
    x = _images()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 1.0)
    out = self.variant(normalize)(x, mean, std)
    chex.assert_type(out, jnp.float32)
    expected = (np.asarray(x) / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    out_f = self.variant(normalize)(jnp.asarray(np.asarray(x) / 255.0, jnp.float32), mean, std)
    np.testing.assert_allclose(out_f, expected, rtol=1e-5, atol=1e-5)


def test_augment_batch_normalises_before_cutout():
  x = _images(n=8)
  out = augment_batch(jax.random.key(0), x, crop_padding=0, flip=False, cutout_size=4,
                      mean=(0.5,) * 3, std=(0.25,) * 3)
  ref = normalize(x, (0.5,) * 3, (0.25,) * 3)
  out, ref = np.asarray(out), np.asarray(ref)
  diff = out != ref
  assert diff.any() and (out[diff] == 0).all()


def test_augment_no_recompile_for_new_keys():
  traces = []

  def fn(key, x):
    traces.append(1)
    return augment_batch(key, x, crop_padding=4, flip=True, cutout_size=8)

  jitted = jax.jit(fn)
  x = _images(np.float32)
  outs = [np.asarray(jitted(jax.random.key(i), x)) for i in range(3)]
  assert len(traces) == 1
  assert not np.array_equal(outs[0], outs[1])


def test_augment_bad_inputs():
  key = jax.random.key(0)
  with pytest.raises(NasjaxError, match="N, H, W, C"):
    random_flip(key, jnp.zeros((4, 4, 3)))
  with pytest.raises(NasjaxError, match="padding"):
    random_crop(key, _images(), padding=-1)
  with pytest.raises(NasjaxError, match="3 channels"):
    normalize(_images(), (0.5, 0.5), (1.0, 1.0))
  with pytest.raises(NasjaxError, match="positive"):
    normalize(_images(), (0.5,), (0.0,))
  with pytest.raises(NasjaxError, match="both mean and std"):
    augment_batch(key, _images(), mean=(0.5,))


# --------------------------------------------------------------------------------------------------
# splitting and subsets


def _labelled(n=103, classes=4):
  y = np.arange(n) % classes
  x = np.arange(n)[:, None] * np.ones((1, 2), int)  # x[i] identifies example i
  return x, y


def test_train_valid_split_stratified_deterministic():
  x, y = _labelled(100, 4)
  a = train_valid_split(x, y, 0.5, seed=0)
  b = train_valid_split(x, y, 0.5, seed=0)
  c = train_valid_split(x, y, 0.5, seed=1)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a[2], c[2])
  x_tr, y_tr, x_va, y_va = a
  assert len(y_tr) == len(y_va) == 50
  assert set(np.bincount(y_va)) <= {12, 13}
  assert sorted(np.concatenate([x_tr[:, 0], x_va[:, 0]]).tolist()) == list(range(100))
  np.testing.assert_array_equal(y_tr, x_tr[:, 0] % 4)
  x_tr, _, x_va, _ = train_valid_split(x, y, 0.1, seed=0)
  assert len(x_va) == 10 and len(x_tr) == 90


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5, True])
def test_train_valid_split_bad_fraction(fraction):
  x, y = _labelled()
  with pytest.raises(NasjaxError, match="valid_fraction"):
    train_valid_split(x, y, fraction, seed=0)


def test_subset_balanced_deterministic():
  x, y = _labelled(100, 4)
  xs, ys = subset(x, y, 0.2, seed=0)
  np.testing.assert_array_equal(np.bincount(ys), [5, 5, 5, 5])
  xs2, _ = subset(x, y, 20, seed=0)
  np.testing.assert_array_equal(xs, xs2)
  xs3, _ = subset(x, y, 20, seed=1)
  assert not np.array_equal(xs, xs3)
  # Imbalanced: class 0 has only 3 examples; the others make up the count.
  y_imb = np.array([0] * 3 + [1] * 50 + [2] * 50)
  _, ys = subset(np.zeros((103, 1)), y_imb, 31, seed=0)
  np.testing.assert_array_equal(np.bincount(ys), [3, 14, 14])
  _, ys = subset(np.zeros((103, 1)), y_imb, 103, seed=0)
  assert len(ys) == 103
  for bad in (0, 104, 0.0, 1.5, "half"):
    with pytest.raises(NasjaxError, match="subset"):
      subset(x, y, bad, seed=0)


# --------------------------------------------------------------------------------------------------
# batching


def _batches(batcher, epoch, start=0):
  return [(bx.copy(), by.copy()) for bx, by in batcher.epoch(epoch, start_step=start)]


def test_batcher_deterministic_and_resumable():
  x, y = _labelled(103, 4)
  b = Batcher(x, y, batch_size=10, seed=7)
  assert b.steps_per_epoch == 10 and len(b) == 10
  e0 = _batches(b, 0)
  assert len(e0) == 10 and all(bx.shape == (10, 2) for bx, _ in e0)
  again = _batches(Batcher(x, y, batch_size=10, seed=7), 0)
  for (ax, ay), (bx, by) in zip(e0, again):
    np.testing.assert_array_equal(ax, bx)
    np.testing.assert_array_equal(ay, by)
  e1 = _batches(b, 1)
  assert not np.array_equal(np.concatenate([bx for bx, _ in e0]), np.concatenate([bx for bx, _ in e1]))
  other_seed = _batches(Batcher(x, y, batch_size=10, seed=8), 0)
  assert not np.array_equal(e0[0][0], other_seed[0][0])
  resumed = _batches(Batcher(x, y, batch_size=10, seed=7), 1, start=4)
  assert len(resumed) == 6
  for (ax, ay), (bx, by) in zip(e1[4:], resumed):
    np.testing.assert_array_equal(ax, bx)
    np.testing.assert_array_equal(ay, by)
  assert _batches(b, 1, start=10) == []


def test_batcher_covers_every_example_once():
  x, y = _labelled(103, 4)
  b = Batcher(x, y, batch_size=10, seed=0, drop_remainder=False)
  assert b.steps_per_epoch == 11
  batches = _batches(b, 3)
  assert [len(by) for _, by in batches] == [10] * 10 + [3]
  seen = np.concatenate([bx[:, 0] for bx, _ in batches])
  assert sorted(seen.tolist()) == list(range(103))
  for bx, by in batches:
    np.testing.assert_array_equal(by, bx[:, 0] % 4)  # x and y stay paired
  dropped = np.concatenate([bx[:, 0] for bx, _ in _batches(Batcher(x, y, 10, seed=0), 3)])
  assert len(dropped) == 100 and len(set(dropped.tolist())) == 100


def test_batcher_errors():
  x, y = _labelled(20, 2)
  with pytest.raises(NasjaxError, match="batch_size 21 is larger than the number of examples \\(20\\)"):
    Batcher(x, y, batch_size=21, seed=0)
  for bad in (0, -3, 2.5):
    with pytest.raises(NasjaxError, match="batch_size"):
      Batcher(x, y, batch_size=bad, seed=0)
  with pytest.raises(NasjaxError, match="first axes"):
    Batcher(x, y[:-1], batch_size=4, seed=0)
  with pytest.raises(NasjaxError, match="start_step"):
    Batcher(x, y, batch_size=4, seed=0).epoch(0, start_step=6)


# --------------------------------------------------------------------------------------------------
# sharding

def _need_devices():
  # Checked inside the tests, not at collection, so importing this module does not start JAX's backend.
  if jax.local_device_count() < 2:
    pytest.skip("needs >= 2 devices; run with XLA_FLAGS=--xla_force_host_platform_device_count=4 set "
                "before JAX starts")


def test_shard_batch_splits_leading_axis():
  _need_devices()
  mesh = data_mesh()
  n_dev = jax.local_device_count()
  assert mesh.axis_names == ("data",) and mesh.devices.size == n_dev
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8 * n_dev, 5, 3)).astype(np.float32)
  y = np.arange(8 * n_dev, dtype=np.int32)
  sx, sy = shard_batch((x, y), mesh)
  assert sx.shape == x.shape
  shards = sx.addressable_shards
  assert len(shards) == n_dev and len({s.device for s in shards}) == n_dev
  assert all(s.data.shape == (8, 5, 3) for s in shards)
  np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in
                                                sorted(shards, key=lambda s: s.index[0].start)]), x)
  total = jax.jit(lambda a, b: (a.sum(), b.sum()))(sx, sy)
  np.testing.assert_allclose(total[0], x.sum(dtype=np.float64), rtol=1e-5)
  assert int(total[1]) == int(y.sum())
  params = replicate({"w": np.ones((3, 2), np.float32)}, mesh)
  assert params["w"].sharding.is_fully_replicated
  assert len(params["w"].addressable_shards) == n_dev


def test_shard_batch_not_divisible():
  _need_devices()
  mesh = data_mesh()
  n_dev = jax.local_device_count()
  expected = f"batch size {2 * n_dev + 1} is not divisible by the number of devices \\({n_dev}\\)"
  with pytest.raises(NasjaxError, match=expected):
    shard_batch({"x": np.zeros((2 * n_dev + 1, 3))}, mesh)


def test_shard_batch_single_device_mesh():
  mesh = data_mesh(jax.local_devices()[:1])
  out = shard_batch({"x": np.arange(6.0)}, mesh)
  np.testing.assert_array_equal(out["x"], np.arange(6.0))
  with pytest.raises(NasjaxError, match="scalar"):
    shard_batch({"x": np.float32(1.0)}, mesh)
