"""Image classification data sets as in-memory numpy arrays.

:func:`load_dataset` turns a short spec string into a :class:`Dataset`:

* ``"embedded"`` (alias ``"fashion_mnist_small"``): a class-balanced 4,000 + 1,000 image subset of
  Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
  Machine Learning Algorithms", arXiv:1708.07747; MIT licence) shipped inside the package, so demos and
  tests run offline.
* ``"path/to/file.npz"``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.
* ``"tfds:NAME"`` or a bare well-known name such as ``"cifar10"``: a TensorFlow Datasets data set read
  through ``tfds.data_source`` (the array_record reader, which needs no TensorFlow). It must already be
  prepared on this machine; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import math
import os
import zipfile
import zlib

import numpy as np

from nasjax.errors import NasjaxError

EMBEDDED_NAME = "fashion_mnist_small"
EMBEDDED_FILE = "fashion_mnist_small.npz"
EMBEDDED_ALIASES = ("embedded", EMBEDDED_NAME)

# Image classification sets with 'image' and 'label' features and 'train'/'test' splits; other tfds
# names still work with the explicit "tfds:" prefix.
KNOWN_TFDS_NAMES = (
    "mnist",
    "fashion_mnist",
    "kmnist",
    "emnist",
    "cifar10",
    "cifar100",
    "svhn_cropped",
    "stl10",
)

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")

_ACCEPTED_SPECS = (
    "'embedded' (alias 'fashion_mnist_small'), a path ending in .npz with arrays "
    "x_train, y_train, x_test, y_test, 'tfds:NAME' for any prepared TensorFlow Datasets image set, "
    f"or one of the bare names {', '.join(KNOWN_TFDS_NAMES)}"
)


# eq=False: generated __eq__/__hash__ would compare and hash whole image arrays (and fail on them).
@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Train and test images with integer labels, held in host memory.

  Attributes:
    name: a short name for logs ("fashion_mnist_small", the npz file stem, or the tfds name).
    x_train: images, NHWC, uint8 on 0..255 or float32 on [0, 1]; always 4-D (grey images get C=1).
    y_train: int32 labels in [0, num_classes).
    x_test: like ``x_train``.
    y_test: like ``y_train``.
    num_classes: number of classes.
    mean: per-channel mean of ``x_train`` on the [0, 1] scale.
    std: per-channel standard deviation of ``x_train`` on the [0, 1] scale.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  @property
  def input_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

  @functools.cached_property
  def fingerprint(self) -> dict:
    """What a checkpoint records of its data: the name, sizes and a SHA-256 of all four arrays.

    A resume compares contents, not paths: the same file reached by another path (or copied to another
    machine) resumes, while another data set with the same name, or a regenerated subset, is refused.
    Hashing the 70,000 Fashion-MNIST images takes under 0.1 s (0.05 s measured).
    """
    digest = hashlib.sha256()
    for array in (self.x_train, self.y_train, self.x_test, self.y_test):
      array = np.ascontiguousarray(array)
      digest.update(f"{array.dtype.str}{array.shape}".encode())
      digest.update(memoryview(array).cast("B"))
    return {"name": self.name, "train_images": int(self.x_train.shape[0]),
            "test_images": int(self.x_test.shape[0]), "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes), "sha256": digest.hexdigest()}

  def __repr__(self) -> str:
    # The default repr would print whole image arrays.
    return (
        f"Dataset(name={self.name!r}, train={self.x_train.shape[0]}, test={self.x_test.shape[0]}, "
        f"input_shape={self.input_shape}, dtype={self.x_train.dtype}, num_classes={self.num_classes})"
    )


def load_dataset(spec: str, data_dir: str | None = None) -> Dataset:
  """Loads a data set from a spec string (see the module docstring for the accepted forms).

  Args:
    spec: "embedded" / "fashion_mnist_small", a path ending in ".npz", "tfds:NAME", or a bare known tfds
      name (``KNOWN_TFDS_NAMES``).
    data_dir: where TensorFlow Datasets looks for prepared data; ``None`` means tfds' default
      (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Ignored for the other forms.

  Raises:
    NasjaxError: the spec is not one of the accepted forms, the file is missing or malformed, or the
      tfds data set is not prepared on this machine.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise NasjaxError(f"dataset spec must be a non-empty string; got {spec!r}. Accepted: {_ACCEPTED_SPECS}.")
  spec = spec.strip()
  if spec in EMBEDDED_ALIASES:
    return _load_embedded()
  if spec.lower().endswith(".npz"):
    path = os.path.expanduser(spec)
    arrays = read_npz_arrays(path)
    return dataset_from_arrays(os.path.splitext(os.path.basename(path))[0], arrays, where=path)
  if spec.startswith("tfds:"):
    name = spec[len("tfds:"):].strip()
    if not name:
      raise NasjaxError(f"dataset spec {spec!r} names no tfds data set; write e.g. 'tfds:cifar10'.")
    return _load_tfds(name, data_dir)
  if spec in KNOWN_TFDS_NAMES:
    return _load_tfds(spec, data_dir)
  raise NasjaxError(f"unknown dataset {spec!r}. Accepted: {_ACCEPTED_SPECS}.")


# --------------------------------------------------------------------------------------------------
# npz files


def read_npz_arrays(path: str, *, label: str | None = None) -> dict[str, np.ndarray]:
  """Reads and validates the four arrays of a data set npz file, without pickle.

  The zip directory and the ``.npy`` headers are read first (:func:`inspect_npz`): a file that is no
  archive, a damaged one, one that needs pickle, one with wrong keys, dtypes, shapes or lengths, and one
  whose headers declare more data than it holds (or than this machine can hold) are refused before any
  array is allocated. Then the arrays are read and their values checked (:func:`validate_arrays`).
  Images are returned as stored (N,H,W or N,H,W,C) but converted to uint8 or float32; labels to int32.
  Extra keys (such as the embedded file's ``provenance``) are ignored.

  Args:
    path: the npz file.
    label: how to name the file in messages (default: the path).

  Raises:
    NasjaxError: naming the file and the first problem found.
  """
  where = label or path
  declared = inspect_npz(path, where=where)
  from nasjax.utils.validation import check_fits  # pylint: disable=import-outside-toplevel
  check_fits(sum(_nbytes(*declared[k]) for k in REQUIRED_KEYS), f"dataset file {where}",
             "use a smaller file (or a subset of it)")
  try:
    # allow_pickle=False: a data file must never be able to run code when loaded (inspect_npz refused
    # object arrays already; this stays as the second lock).
    with np.load(path, allow_pickle=False) as npz:
      raw = {k: npz[k] for k in REQUIRED_KEYS}
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as e:
    raise NasjaxError(f"dataset file {where} is damaged: its arrays cannot be read ({type(e).__name__}: {e})."
                      ) from None
  return validate_arrays(raw, where=f"dataset file {where}")


_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
  return math.prod(shape) * dtype.itemsize


def inspect_npz(path: str, *, where: str | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """``{key: (shape, dtype)}`` of the four arrays of a data set npz, read from the zip directory and the
  ``.npy`` headers only, with everything about them that can be checked before reading any data.

  Tells apart, in this order: a file that is not an npz archive at all (random bytes, text, a single
  ``.npy``); a damaged or truncated archive; an array that needs pickle (refused: loading it could run
  code); missing arrays, wrong dtypes, shapes or lengths; and an array whose header declares more data
  than the file holds (read, it would be allocated first and fail after).

  Raises:
    NasjaxError: naming the file, the array and the problem.
  """
  where = where or path
  if not os.path.isfile(path):
    raise NasjaxError(f"dataset file {where} does not exist (or is not a file).")
  how = "write the arrays with numpy.savez or numpy.savez_compressed"
  try:
    with open(path, "rb") as f:
      magic = f.read(6)
  except OSError as e:
    raise NasjaxError(f"dataset file {where} cannot be read: {e.strerror or e}.") from None
  if magic.startswith(b"\x93NUMPY"):
    raise NasjaxError(f"dataset file {where} holds a single array (.npy), not an npz archive with the arrays "
                      f"{', '.join(REQUIRED_KEYS)}; {how}.")
  if not magic.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
    what = "it is empty" if not magic else "it does not start as a zip file does"
    raise NasjaxError(f"dataset file {where} is not an npz archive ({what}); {how}.")
  size = os.path.getsize(path)
  declared = {}
  try:
    with zipfile.ZipFile(path) as archive:
      members = {info.filename: info for info in archive.infolist()}
      names = {name[:-4] if name.endswith(".npy") else name: name for name in members}
      missing = [k for k in REQUIRED_KEYS if k not in names]
      if missing:
        raise NasjaxError(
            f"dataset file {where} is missing {', '.join(missing)}; it has {', '.join(sorted(names)) or 'no arrays'}. "
            f"Required arrays: {', '.join(REQUIRED_KEYS)} (other arrays are ignored).")
      for key in REQUIRED_KEYS:
        info = members[names[key]]
        if info.header_offset + info.compress_size > size:
          raise NasjaxError(f"dataset file {where}: array {key} declares {info.compress_size:,} bytes stored "
                            f"beyond the end of the file ({size:,} bytes); the file is truncated or damaged.")
        with archive.open(info) as member:
          version = np.lib.format.read_magic(member)
          # The header is a Python literal of a dict, which numpy parses with ast.literal_eval: no code runs.
          read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                         (2, 0): np.lib.format.read_array_header_2_0}.get(version)
          if read_header is None:
            raise NasjaxError(f"dataset file {where}: array {key} is in .npy format version {version}, which "
                              f"nasjax does not read (1.0 and 2.0 are accepted); {how}.")
          shape, _, dtype = read_header(member, max_header_size=10_000)
          header_bytes = member.tell()
        if dtype.hasobject:
          raise NasjaxError(f"dataset file {where}: array {key} is an object array, which needs pickle to load; "
                            "nasjax refuses pickle for safety (it can run code). Store images as uint8 or "
                            "float arrays and labels as integer arrays.")
        holds = info.file_size - header_bytes
        if _nbytes(shape, dtype) > holds:
          raise NasjaxError(f"dataset file {where}: array {key} declares shape {shape} of {dtype} "
                            f"({_nbytes(shape, dtype):,} bytes) but the file holds {max(0, holds):,} bytes of it; "
                            "the header is wrong or the file is damaged.")
        declared[key] = (tuple(int(d) for d in shape), dtype)
  except NasjaxError:
    raise
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error, NotImplementedError) as e:
    raise NasjaxError(f"dataset file {where} is a damaged or truncated npz archive ({type(e).__name__}: {e}); "
                      f"{how}.") from None
  check_layout(declared, where=f"dataset file {where}")
  return declared


def check_layout(declared: dict[str, tuple[tuple[int, ...], np.dtype]], *, where: str) -> None:
  """Checks dtypes, ranks, channel counts and lengths from shapes and dtypes alone (before any data)."""
  for split in ("train", "test"):
    _check_image_layout(*declared[f"x_{split}"], f"x_{split}", where)
    _check_label_layout(*declared[f"y_{split}"], f"y_{split}", where)
    nx, ny = declared[f"x_{split}"][0][0], declared[f"y_{split}"][0][0]
    if nx != ny:
      raise NasjaxError(f"{where}: x_{split} has {nx} images but y_{split} has {ny} labels; they must match.")
  tr, te = _hwc(declared["x_train"][0]), _hwc(declared["x_test"][0])
  if tr != te:
    raise NasjaxError(
        f"{where}: train images are {tr} (H, W, C) but test images are {te}; they must have the same shape.")


def _check_image_layout(shape: tuple[int, ...], dtype: np.dtype, key: str, where: str) -> None:
  if dtype.kind not in "uif":
    raise NasjaxError(f"{where}: {key} has dtype {dtype}; images must be uint8 (0..255) or float (0..1).")
  if len(shape) not in (3, 4):
    raise NasjaxError(
        f"{where}: {key} has shape {shape} ({len(shape)}-D); images must be 3-D (N, H, W) or 4-D (N, H, W, C).")
  if len(shape) == 4 and not 1 <= shape[3] <= 4:
    raise NasjaxError(
        f"{where}: {key} has shape {shape} with {shape[3]} channels; the last axis must hold 1 to 4 "
        "channels (NHWC layout).")
  if shape[0] == 0:
    raise NasjaxError(f"{where}: {key} is empty (shape {shape}); each split needs at least one image.")
  if min(shape[1:3]) == 0:
    raise NasjaxError(f"{where}: {key} has shape {shape}; image height and width must be positive.")


def _check_label_layout(shape: tuple[int, ...], dtype: np.dtype, key: str, where: str) -> None:
  if len(shape) != 1:
    raise NasjaxError(f"{where}: {key} has shape {shape}; labels must be 1-D (N,) class indices.")
  if shape[0] == 0:
    raise NasjaxError(f"{where}: {key} is empty; each split needs at least one label.")
  if dtype.kind not in "uif":
    raise NasjaxError(f"{where}: {key} has dtype {dtype}; labels must be integer class indices 0..num_classes-1.")


def validate_arrays(raw: dict[str, np.ndarray], *, where: str) -> dict[str, np.ndarray]:
  """Checks dtypes, shapes and label ranges of x_train, y_train, x_test, y_test; returns converted copies.

  Args:
    raw: the four arrays.
    where: the start of every error message, e.g. "dataset file data.npz".
  """
  check_layout({k: (np.shape(v), np.asarray(v).dtype) for k, v in raw.items()}, where=where)
  out = {}
  for split in ("train", "test"):
    out[f"x_{split}"] = _check_images(raw[f"x_{split}"], f"x_{split}", where)
    out[f"y_{split}"] = _check_labels(raw[f"y_{split}"], f"y_{split}", where)
    nx, ny = out[f"x_{split}"].shape[0], out[f"y_{split}"].shape[0]
    if nx != ny:
      raise NasjaxError(f"{where}: x_{split} has {nx} images but y_{split} has {ny} labels; they must match.")
  tr, te = _hwc(out["x_train"].shape), _hwc(out["x_test"].shape)
  if tr != te:
    raise NasjaxError(
        f"{where}: train images are {tr} (H, W, C) but test images are {te}; they must have the same shape."
    )
  if out["x_train"].dtype != out["x_test"].dtype:
    # Mixed uint8/float would give the two splits different scales downstream.
    raise NasjaxError(
        f"{where}: x_train is {out['x_train'].dtype} but x_test is {out['x_test'].dtype}; use one image dtype."
    )
  return out


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
  return (shape[1], shape[2], shape[3] if len(shape) == 4 else 1)


def _check_images(x: np.ndarray, key: str, where: str) -> np.ndarray:
  """The values of images whose layout :func:`check_layout` accepted."""
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x
  lo, hi = (x.min(), x.max())
  if x.dtype.kind in "ui":
    if lo < 0 or hi > 255:
      raise NasjaxError(
          f"{where}: {key} is {x.dtype} with values {lo}..{hi}; integer images must lie in 0..255 (uint8)."
      )
    return x.astype(np.uint8)
  if not (np.isfinite(lo) and np.isfinite(hi)):
    raise NasjaxError(f"{where}: {key} contains NaN or infinite values.")
  if lo < 0.0 or hi > 1.0:
    raise NasjaxError(
        f"{where}: {key} is {x.dtype} with values {float(lo):g}..{float(hi):g}; float images must lie in "
        "[0, 1] (divide 0..255 pixels by 255, or store them as uint8)."
    )
  return x.astype(np.float32, copy=False)


def _check_labels(y: np.ndarray, key: str, where: str) -> np.ndarray:
  """The values of labels whose layout :func:`check_layout` accepted."""
  y = np.asarray(y)
  if y.dtype.kind == "f":
    if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
      raise NasjaxError(
          f"{where}: {key} is {y.dtype} with non-integer values; labels must be integer class indices "
          "0..num_classes-1."
      )
  lo, hi = y.min(), y.max()
  if lo < 0:
    raise NasjaxError(f"{where}: {key} has negative labels (min {lo}); labels must be 0..num_classes-1.")
  if hi > np.iinfo(np.int32).max:
    raise NasjaxError(f"{where}: {key} has label {hi}, too large for a class index.")
  return y.astype(np.int32)


def dataset_from_arrays(name: str, arrays: dict[str, np.ndarray], *, where: str,
                        num_classes: int | None = None) -> Dataset:
  """Builds a :class:`Dataset` from validated arrays: adds the channel axis and computes statistics."""
  x_train, x_test = (_nhwc(arrays[k]) for k in ("x_train", "x_test"))
  y_train, y_test = arrays["y_train"], arrays["y_test"]
  max_label = int(max(y_train.max(), y_test.max()))
  if num_classes is None:
    num_classes = max_label + 1
  elif max_label >= num_classes:
    raise NasjaxError(f"{where}: label {max_label} is out of range for {num_classes} classes.")
  if num_classes < 2:
    raise NasjaxError(f"{where}: every label is {max_label}; a classifier needs at least 2 classes "
                      "(labels 0..num_classes-1).")
  mean, std = channel_stats(x_train)
  return Dataset(name, x_train, y_train, x_test, y_test, int(num_classes), mean, std)


def _nhwc(x: np.ndarray) -> np.ndarray:
  return x[..., None] if x.ndim == 3 else x


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of NHWC images on the [0, 1] scale.

  Accumulates in float64 over chunks so CIFAR-sized sets do not need a float copy of the whole array.
  """
  scale = 255.0 if x.dtype == np.uint8 else 1.0
  c = x.shape[-1]
  s = np.zeros(c, np.float64)
  ss = np.zeros(c, np.float64)
  for i in range(0, x.shape[0], chunk):
    part = x[i:i + chunk].reshape(-1, c).astype(np.float64) / scale
    s += part.sum(axis=0)
    ss += np.square(part).sum(axis=0)
  n = x.size // c
  mean = s / n
  var = np.maximum(ss / n - np.square(mean), 0.0)
  return tuple(float(v) for v in mean), tuple(float(v) for v in np.sqrt(var))


# --------------------------------------------------------------------------------------------------
# the embedded subset


def _load_embedded() -> Dataset:
  ref = importlib.resources.files("nasjax.data").joinpath(EMBEDDED_FILE)
  if not ref.is_file():
    raise NasjaxError(
        f"the embedded data set {EMBEDDED_FILE} is missing from the nasjax package (a broken install?); "
        "reinstall nasjax or regenerate it with python -m nasjax.data.make_embedded."
    )
  with importlib.resources.as_file(ref) as path:
    arrays = read_npz_arrays(str(path), label=f"nasjax/data/{EMBEDDED_FILE}")
  return dataset_from_arrays(EMBEDDED_NAME, arrays, where=EMBEDDED_FILE)


# --------------------------------------------------------------------------------------------------
# TensorFlow Datasets


def _load_tfds(name: str, data_dir: str | None) -> Dataset:
  # Imported lazily: tfds takes seconds to import and most runs use the embedded set or an npz.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    train, test = tfds.data_source(name, split=["train", "test"], data_dir=data_dir, download=False)
  except tfds.core.registered.DatasetNotFoundError:
    raise NasjaxError(
        f"TensorFlow Datasets has no data set named {name!r}. Accepted: {_ACCEPTED_SPECS}."
    ) from None
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_load_error(tfds, name, data_dir, e) from None

  features = train.dataset_info.features
  missing = [k for k in ("image", "label") if k not in features]
  if missing:
    raise NasjaxError(
        f"tfds data set {name!r} has features {', '.join(features.keys())} but nasjax needs 'image' and "
        "'label' (an image classification set)."
    )
  num_classes = getattr(features["label"], "num_classes", None)
  raw = {}
  for split, source in (("train", train), ("test", test)):
    n = len(source)
    if n == 0:
      raise NasjaxError(f"tfds data set {name!r}: split {split!r} is empty.")
    first = source[0]
    images = np.empty((n,) + np.shape(first["image"]), np.asarray(first["image"]).dtype)
    labels = np.empty((n,), np.int64)
    for i in range(n):
      ex = first if i == 0 else source[i]
      images[i] = ex["image"]
      labels[i] = ex["label"]
    raw[f"x_{split}"], raw[f"y_{split}"] = images, labels
  arrays = validate_arrays(raw, where=f"tfds data set {name!r}")
  return dataset_from_arrays(name, arrays, where=f"tfds data set {name!r}", num_classes=num_classes)


def _tfds_load_error(tfds, name: str, data_dir: str | None, err: Exception) -> NasjaxError:
  """Turns a tfds failure into a message saying where tfds looked and how to prepare the data."""
  how = (
      f"prepare it on a machine with network access with `tfds build {name} --file_format=array_record"
      f"{' --data_dir=' + data_dir if data_dir else ''}` (or `tfds.data_source('{name}')` in Python) and copy "
      "the data directory here, or pass an .npz file with x_train, y_train, x_test, y_test instead"
  )
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    looked = str(builder.data_dir)
    prepared = builder.is_prepared()
    file_format = getattr(builder.info, "file_format", None)
  except Exception:  # pylint: disable=broad-except
    looked = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    prepared, file_format = False, None
  if not prepared:
    return NasjaxError(
        f"tfds data set {name!r} is not prepared on this machine (looked in {looked}; nasjax never "
        f"downloads). To use it, {how}."
    )
  fmt = getattr(file_format, "value", file_format)
  if fmt is not None and fmt != "array_record":
    return NasjaxError(
        f"tfds data set {name!r} is prepared in {looked} as {fmt}, but nasjax reads tfds data without "
        f"TensorFlow through tfds.data_source, which needs the array_record format. Convert it with "
        f"`tfds convert_format --dataset_version_dir={looked} --out_file_format=array_record` (on a machine "
        f"with TensorFlow), or {how}."
    )
  return NasjaxError(f"tfds data set {name!r} in {looked} cannot be read: {type(err).__name__}: {err}")
