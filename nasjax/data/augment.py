"""On-device, jittable image augmentation for NHWC batches.

Every function takes a PRNG key for the whole batch, splits it into one key per image and vmaps the
per-image transform, so each image gets its own randomness while all shapes stay static: a new key never
triggers recompilation. Integer arguments (``padding``, ``size``, ``crop_padding``, ``flip``,
``cutout_size``) fix shapes and must be static under ``jax.jit`` (``static_argnames``).

The standard CIFAR recipe used by DARTS (Liu, Simonyan & Yang 2019, "DARTS: Differentiable Architecture
Search") and most NAS papers is: random crop with 4 pixels of zero padding, random horizontal flip,
normalisation, then cutout (DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural
Networks with Cutout", arXiv:1708.04552) with a 16x16 square. :func:`augment_batch` applies them in this
order.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.errors import NasjaxError


def _check_batch(images, fn: str) -> None:
  if jnp.ndim(images) != 4:
    raise NasjaxError(
        f"{fn} expects a batch of images shaped (N, H, W, C); got shape {jnp.shape(images)}."
    )


def _check_nonneg_int(value, name: str, fn: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise NasjaxError(f"{fn}: {name} must be a non-negative Python int (static under jit); got {value!r}.")
  return int(value)


def _per_image_keys(key, n: int):
  return jax.random.split(key, n)


def random_crop(key, images, padding: int = 4):
  """Zero-pads each image by ``padding`` pixels on every side, then crops back to (H, W) at a random offset.

  Offsets are drawn independently per image, uniformly in [0, 2 * padding]. ``padding=0`` is the identity.

  Args:
    key: a PRNG key.
    images: (N, H, W, C), any dtype (the dtype is kept).
    padding: pixels added on each side; static.
  """
  _check_batch(images, "random_crop")
  padding = _check_nonneg_int(padding, "padding", "random_crop")
  if padding == 0:
    return jnp.asarray(images)
  n, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

  def crop_one(k, img):
    dy, dx = jax.random.randint(k, (2,), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(img, (dy, dx, 0), (h, w, c))

  return jax.vmap(crop_one)(_per_image_keys(key, n), padded)


def random_flip(key, images):
  """Flips each image horizontally with probability 1/2 (independently per image; same key, same flips).

  Args:
    key: a PRNG key.
    images: (N, H, W, C), any dtype (the dtype is kept).
  """
  _check_batch(images, "random_flip")

  def flip_one(k, img):
    return jnp.where(jax.random.bernoulli(k), img[:, ::-1, :], img)

  return jax.vmap(flip_one)(_per_image_keys(key, images.shape[0]), images)


def cutout(key, images, size: int = 16):
  """Cutout (DeVries & Taylor 2017): zeroes one ``size`` x ``size`` square per image, in all channels.

  As in the paper's reference code, the square's centre is uniform over the whole image, so squares near
  the border are clipped and cover fewer pixels; it is meant to run after normalisation, where 0 is the
  data set mean. ``size=0`` is the identity.

  Args:
    key: a PRNG key.
    images: (N, H, W, C), any dtype (the dtype is kept).
    size: side of the square in pixels; static.
  """
  _check_batch(images, "cutout")
  size = _check_nonneg_int(size, "size", "cutout")
  if size == 0:
    return jnp.asarray(images)
  n, h, w, _ = images.shape
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]

  def cut_one(k, img):
    ky, kx = jax.random.split(k)
    # Corner = centre - size // 2 makes the square exactly `size` wide before clipping (the reference
    # code's centre +- size // 2 is one pixel short for odd sizes).
    top = jax.random.randint(ky, (), 0, h) - size // 2
    left = jax.random.randint(kx, (), 0, w) - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return jnp.where(inside[:, :, None], jnp.zeros((), img.dtype), img)

  return jax.vmap(cut_one)(_per_image_keys(key, n), images)


def _channel_values(values, name: str, channels: int):
  """Per-channel constants as numpy when concrete (so they can be checked), else as a traced array."""
  try:
    arr = np.asarray(values, np.float32).reshape(-1)
  except jax.errors.TracerArrayConversionError:
    arr = jnp.asarray(values, jnp.float32).reshape(-1)
  except (TypeError, ValueError):
    raise NasjaxError(f"normalize: {name} must be numbers, one per channel; got {values!r}.") from None
  if arr.shape[0] not in (1, channels):
    raise NasjaxError(
        f"normalize: {name} has {arr.shape[0]} values but the images have {channels} channels; give one "
        "value per channel (or a single value)."
    )
  return arr


def normalize(images, mean: Sequence[float], std: Sequence[float]):
  """Maps images to float32 ``(x - mean) / std`` per channel.

  uint8 images are first divided by 255; float images are taken to be on [0, 1] already, matching
  :attr:`nasjax.data.Dataset.mean` / ``std``, which are measured on that scale.

  Args:
    images: (..., C) uint8 or float.
    mean: C per-channel means on the [0, 1] scale (or one value for all channels).
    std: C per-channel standard deviations, all positive (or one value).
  """
  if jnp.ndim(images) < 1:
    raise NasjaxError(f"normalize expects images with a trailing channel axis; got shape {jnp.shape(images)}.")
  c = jnp.shape(images)[-1]
  mean_a = _channel_values(mean, "mean", c)
  std_a = _channel_values(std, "std", c)
  if isinstance(std_a, np.ndarray) and np.any(std_a <= 0):
    raise NasjaxError(f"normalize: std must be positive in every channel; got {tuple(std_a.tolist())}.")
  x = jnp.asarray(images)
  if x.dtype == jnp.uint8:
    x = x.astype(jnp.float32) / 255.0
  else:
    x = x.astype(jnp.float32)
  return (x - mean_a) / std_a


def augment_batch(
    key,
    images,
    *,
    crop_padding: int = 4,
    flip: bool = True,
    cutout_size: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
):
  """Random crop, horizontal flip, optional normalisation, then cutout, with independent keys.

  Without ``mean``/``std`` the images are augmented as given (pass them already normalised, so that the
  crop padding and the cutout square are both the data set mean). With ``mean`` and ``std``, raw images
  are cropped (padding is black) and flipped, normalised to float32, then cut out, which is exactly the
  DARTS / DeVries & Taylor (2017) order.

  Args:
    key: a PRNG key.
    images: (N, H, W, C).
    crop_padding: padding of :func:`random_crop`; 0 disables cropping. Static.
    flip: whether to apply :func:`random_flip`. Static.
    cutout_size: side of the :func:`cutout` square; 0 disables cutout. Static.
    mean: per-channel means for :func:`normalize`, or None to skip normalisation.
    std: per-channel standard deviations, given together with ``mean``.
  """
  _check_batch(images, "augment_batch")
  if (mean is None) != (std is None):
    raise NasjaxError("augment_batch: give both mean and std to normalise, or neither.")
  if not isinstance(flip, (bool, np.bool_)):
    raise NasjaxError(f"augment_batch: flip must be a Python bool (static under jit); got {flip!r}.")
  k_crop, k_flip, k_cut = jax.random.split(key, 3)
  x = random_crop(k_crop, images, crop_padding)
  if flip:
    x = random_flip(k_flip, x)
  if mean is not None:
    x = normalize(x, mean, std)
  return cutout(k_cut, x, cutout_size)
