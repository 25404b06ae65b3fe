"""Bad input, as a new user and an adversarial tester would give it, to every command of the CLI.

A case passes only when the command exits with status 2, prints one ``error:`` line naming the problem and no
traceback, and leaves every file that was there before unchanged (the whole test folder is hashed before and
after); nothing may compute first (each case runs under an alarm of a few seconds' worth of work). The
commands run in-process through :func:`nasjax.cli.main`; a subprocess only where the exit itself matters
(what is printed at shutdown, a process without root's privilege to write anywhere).

Property-based tests (hypothesis, derandomised so CI sees the same examples) check every space's
``from_string`` / ``to_string`` on generated and mutated strings, and the data loader on generated archives.
"""

import contextlib
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasjax import NasjaxError, cli, spaces
from nasjax.data import sources

# A case that computes instead of refusing is stopped here and fails (a refused case takes well under 1 s).
CASE_ALARM_S = 60

TINY = ["--channels", "4", "--layers", "3", "--batch-size", "32", "--train-subset", "64", "--quiet"]


@contextlib.contextmanager
def alarm(seconds: int):
  def stop(signum, frame):
    raise TimeoutError(f"still running after {seconds} s: the input was not refused up front")

  previous = signal.signal(signal.SIGALRM, stop)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def snapshot(root: pathlib.Path) -> dict:
  """Every file (its SHA-256) and folder under ``root``."""
  out = {}
  for path in sorted(root.rglob("*")):
    rel = str(path.relative_to(root))
    out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
  return out


def assert_refused(argv, root: pathlib.Path, capsys, *words):
  before = snapshot(root)
  capsys.readouterr()
  with alarm(CASE_ALARM_S):
    rc = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  err = captured.err
  assert rc == 2, f"exit {rc}, stderr: {err[-2000:]}"
  assert "Traceback" not in err and "Traceback" not in captured.out, err
  errors = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, err
  for word in words:
    assert word.lower() in err.lower(), f"{word!r} not in {err!r}"
  assert snapshot(root) == before, "a file or folder was written or changed"
  return err


@pytest.fixture
def world(tmp_path, write_tiny_npz):
  """A folder as a user would have it: a data file, a finished train result, an earlier run's output."""
  npz = write_tiny_npz(tmp_path / "tiny.npz", 96, 16)
  (tmp_path / "a_file").write_text("not a directory\n")
  done = tmp_path / "trained"
  done.mkdir()
  (done / "result.json").write_text(json.dumps({
      "command": "train", "genotype": spaces.get_genotype("DARTS_V2").to_string(), "data": npz,
      "config": {"channels": 4, "layers": 3}}))
  (done / "metrics.jsonl").write_text('{"epoch": 1}\n')
  (done / "checkpoints" / "1").mkdir(parents=True)  # eval reads the data before restoring
  return tmp_path


def command_argv(command: str, root: pathlib.Path) -> list:
  """The command with small valid settings; a case adds or replaces options."""
  data = ["--data", str(root / "tiny.npz")]
  return {
      "search": ["search", "--num-archs", "1", "--epochs", "1"] + TINY + data,
      "oneshot": ["search", "--method", "darts", "--config", "demo", "--epochs", "1"] + TINY + data,
      "train": ["train", "--genotype", "DARTS_V2", "--config", "demo", "--epochs", "1"] + TINY + data,
      "eval": ["eval", "--checkpoint", str(root / "trained"), "--quiet"] + data,
      "info": ["info", "--genotype", "DARTS_V2", "--channels", "4", "--layers", "3"],
  }[command]


COMMANDS = ("search", "oneshot", "train", "eval", "info")


def unwritable_dir(root: pathlib.Path) -> str:
  """A folder this process cannot write in. Root ignores mode bits, so as root a read-only file system's."""
  if os.geteuid() != 0:
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return str(locked)
  if not os.path.isdir("/sys"):
    pytest.skip("running as root without a read-only /sys to write in")
  return "/sys"


# --------------------------------------------------------------------------------------------------
# output locations, every command


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["is_a_file", "under_a_file", "unwritable", "empty"])
def test_bad_out_is_refused_before_any_work(command, where, world, capsys):
  out, words = {
      "is_a_file": (world / "a_file", ("a_file", "not a directory")),
      "under_a_file": (world / "a_file" / "run", ("a_file", "not a directory")),
      "unwritable": (None, ("not writable",)),
      "empty": ("", ("--out", "empty")),
  }[where]
  if where == "unwritable":
    out = os.path.join(unwritable_dir(world), "nasjax-run")
  try:
    assert_refused(command_argv(command, world) + ["--out", out], world, capsys, *words)
  finally:
    if (world / "locked").exists():
      (world / "locked").chmod(0o755)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("capsh") is None, reason="needs root and capsh")
def test_root_without_its_privileges_is_told_the_out_is_not_writable(world):
  """Root that dropped CAP_DAC_OVERRIDE obeys mode bits although ``os.access`` still says yes: the check
  creates a file instead of asking."""
  locked = world / "locked"
  locked.mkdir()
  locked.chmod(0o555)
  before = snapshot(world)
  argv = command_argv("info", world) + ["--out", str(locked / "run")]
  proc = subprocess.run(["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c",
                         " ".join([sys.executable, "-m", "nasjax.cli"] + [f"'{a}'" for a in argv])],
                        capture_output=True, text=True, timeout=120)
  locked.chmod(0o755)
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr and "not writable" in proc.stderr, proc.stderr
  assert snapshot(world) == before


# --------------------------------------------------------------------------------------------------
# options refused up front


@pytest.mark.parametrize("command,options,words", [
    ("train", ["--epochs", "0"], ("--epochs", "positive")),
    ("train", ["--epochs", "-3"], ("--epochs", "positive")),
    ("search", ["--epochs", "0"], ("--epochs", "positive")),
    ("oneshot", ["--epochs", "0"], ("--epochs", "positive")),
    ("search", ["--num-archs", "0"], ("--num-archs", "positive")),
    ("train", ["--batch-size", "0"], ("--batch-size", "positive")),
    ("oneshot", ["--batch-size", "-1"], ("--batch-size", "positive")),
    ("train", ["--channels", "0"], ("--channels", "positive")),
    ("info", ["--channels", "0"], ("--channels", "positive")),
    ("info", ["--layers", "-1"], ("--layers", "positive")),
    ("train", ["--drop-path", "1.0"], ("--drop-path", "[0, 1)")),
    ("train", ["--drop-path", "-0.1"], ("--drop-path", "[0, 1)")),
    ("oneshot", ["--valid-fraction", "1.5"], ("--valid-fraction", "(0, 1)")),
    ("info", ["--classes", "1"], ("--classes", "at least 2")),
    ("info", ["--classes", "0"], ("--classes", "at least 2")),
    ("train", ["--train-subset", "-5"], ("--train-subset",)),
    ("train", ["--checkpoint-every-steps", "-1"], ("--checkpoint-every-steps",)),
    ("train", ["--eval-batch-size", "0"], ("--eval-batch-size", "positive")),
    ("info", ["--layers", "1000000000"], ("memory", "GiB")),
    ("info", ["--input-shape", "100000,100000,3"], ("memory", "GiB")),
    ("train", ["--channels", "4096", "--batch-size", "100000"], ("memory", "GiB")),
    ("oneshot", ["--channels", "4096", "--batch-size", "100000"], ("memory", "GiB")),
    ("search", ["--channels", "4096", "--batch-size", "100000"], ("memory", "GiB")),
])
def test_options_out_of_range_are_refused(command, options, words, world, capsys):
  argv = command_argv(command, world) + options + ["--out", world / "new"]
  assert_refused(argv, world, capsys, *words)


@pytest.mark.parametrize("command,options,words", [
    # The train estimator declares its metrics, so an objective or a constraint it cannot produce is refused
    # before the first candidate trains, with the names it does produce.
    ("search", ["--objectives", "acc:max"], ("unknown objective 'acc'", "estimator train produces", "accuracy")),
    ("search", ["--strategy", "nsga2", "--objectives", "accuracy:max,accuracy_pgd:max"],
     ("unknown objective 'accuracy_pgd'", "cost_s")),
    ("search", ["--objectives", "accuracy:max", "--constraint", "accuracy_fgsm>=0.5"],
     ("accuracy_fgsm>=0.5", "does not produce 'accuracy_fgsm'")),
    ("search", ["--robustness", "--strategy", "nsga2", "--objectives", "accuracy:max,accuracy_pdg:max"],
     ("unknown objective 'accuracy_pdg'", "accuracy_pgd", "accuracy_corrupted")),
    ("search", ["--robustness", "--robustness-epsilon", "2"], ("epsilon", "[0, 1]")),
    ("search", ["--robustness", "--robustness-images", "0"], ("images", "positive")),
    ("search", ["--robustness-epsilon", "0.1"], ("add --robustness",)),
    ("search", ["--robustness", "--estimator", "proxy:synflow"], ("train estimator", "proxy")),
    ("oneshot", ["--robustness"], ("--robustness", "discrete search")),
])
def test_objectives_and_robustness_are_checked_before_the_first_evaluation(command, options, words, world, capsys):
  argv = command_argv(command, world) + options + ["--out", world / "new"]
  assert_refused(argv, world, capsys, *words)


def test_a_data_set_of_one_class_is_refused(world, capsys):
  x = np.zeros((8, 8, 8), np.uint8)
  np.savez(world / "one.npz", x_train=x, y_train=np.zeros(8), x_test=x, y_test=np.zeros(8))
  argv = command_argv("train", world) + ["--data", world / "one.npz", "--out", world / "new"]
  assert_refused(argv, world, capsys, "one.npz", "at least 2 classes")


# --------------------------------------------------------------------------------------------------
# files that are not what they claim


def npy_bytes(header: dict, data: bytes = b"") -> bytes:
  text = repr(header).encode()
  text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
  return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def write_zip(path, members: dict):
  with zipfile.ZipFile(path, "w") as z:
    for name, payload in members.items():
      z.writestr(name, payload)


def good_members(n=8, **replace) -> dict:
  arrays = {"x_train": np.zeros((n, 8, 8), np.uint8), "y_train": np.arange(n) % 2,
            "x_test": np.zeros((4, 8, 8), np.uint8), "y_test": np.arange(4) % 2}
  members = {}
  for key, value in arrays.items():
    buf = io.BytesIO()
    np.save(buf, value)
    members[key + ".npy"] = buf.getvalue()
  members.update({k + ".npy": v for k, v in replace.items()})
  return {k: v for k, v in members.items() if v is not None}


def make_bad_file(kind: str, path: pathlib.Path):
  if kind == "random_bytes":
    path.write_bytes(np.random.default_rng(0).bytes(4096))
  elif kind == "text":
    path.write_text("x_train,y_train\n1,2\n")
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind == "truncated":
    write_zip(path, good_members())
    path.write_bytes(path.read_bytes()[:300])
  elif kind == "single_npy":
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)
  elif kind == "pickled":
    np.savez(path, **{k: v for k, v in [("x_train", np.zeros((4, 8, 8), np.uint8)),
                                        ("y_train", np.array([0, 1, "a", None], object)),
                                        ("x_test", np.zeros((4, 8, 8), np.uint8)),
                                        ("y_test", np.arange(4))]})
  elif kind == "petabytes":
    write_zip(path, good_members(x_train=npy_bytes({"descr": "|u1", "fortran_order": False,
                                                    "shape": (10 ** 12, 1000, 1000)})))
  elif kind == "short_data":
    write_zip(path, good_members(x_train=npy_bytes({"descr": "|u1", "fortran_order": False,
                                                    "shape": (8, 8, 8)}, b"\0" * 100)))
  elif kind == "missing_key":
    write_zip(path, good_members(y_test=None))
  elif kind == "complex_images":
    np.savez(path, x_train=np.zeros((4, 8, 8), np.complex64), y_train=np.arange(4) % 2,
             x_test=np.zeros((4, 8, 8), np.complex64), y_test=np.arange(4) % 2)
  elif kind == "string_labels":
    np.savez(path, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array(["a", "b", "a", "b"]),
             x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 2)
  elif kind == "five_d":
    np.savez(path, x_train=np.zeros((4, 2, 8, 8, 1), np.uint8), y_train=np.arange(4) % 2,
             x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 2)
  elif kind == "lengths":
    np.savez(path, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.arange(5) % 2,
             x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 2)
  elif kind == "negative_labels":
    np.savez(path, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, -1, 1]),
             x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 2)
  elif kind == "float_range":
    np.savez(path, x_train=np.full((4, 8, 8), 3.0, np.float32), y_train=np.arange(4) % 2,
             x_test=np.zeros((4, 8, 8), np.float32), y_test=np.arange(4) % 2)
  else:
    raise AssertionError(kind)


BAD_FILES = {  # kind: words the message must hold
    "random_bytes": ("not an npz archive",),
    "text": ("not an npz archive",),
    "empty": ("not an npz archive",),
    "truncated": ("damaged",),
    "single_npy": ("single array",),
    "pickled": ("pickle", "y_train"),
    "petabytes": ("x_train", "declares"),
    "short_data": ("x_train", "declares"),
    "missing_key": ("y_test", "missing"),
    "complex_images": ("x_train", "complex64"),
    "string_labels": ("y_train", "integer"),
    "five_d": ("x_train", "5-D"),
    "lengths": ("y_train", "5 labels"),
    "negative_labels": ("y_train", "negative"),
    "float_range": ("x_train", "[0, 1]"),
}


# One loader serves every command: each kind of file through train, three through every command.
DATA_CASES = [("train", kind) for kind in sorted(BAD_FILES)] + [
    (command, kind) for command in ("search", "oneshot", "eval") for kind in ("random_bytes", "pickled", "petabytes")]


@pytest.mark.parametrize("command,kind", DATA_CASES)
def test_data_files_that_are_not_what_they_claim(command, kind, world, capsys):
  bad = world / "bad.npz"
  make_bad_file(kind, bad)
  argv = command_argv(command, world) + ["--data", bad, "--out", world / "new"]
  assert_refused(argv, world, capsys, "bad.npz", *BAD_FILES[kind])


def test_the_petabyte_header_is_refused_without_allocating(tmp_path):
  make_bad_file("petabytes", tmp_path / "big.npz")
  with pytest.raises(NasjaxError, match="declares"):
    sources.read_npz_arrays(str(tmp_path / "big.npz"))


def nested(depth: int) -> str:
  return "[" * depth + "]" * depth


@pytest.mark.parametrize("command", ["train", "info"])
@pytest.mark.parametrize("content,words", [
    (nested(100_000), ("nested",)),
    ('{"normal": ' + nested(50_000) + "}", ("nested",)),
    ("{not json", ("not valid JSON",)),
    ('{"genotype": 5}', ("neither",)),
    ("[1, 2, 3]", ("neither",)),
    ('{"normal": [["sep_conv_3x3"]], "reduce": 3}', ("genotype",)),
    ("\udcff", ("not valid",)),
])
def test_genotype_files_that_are_not_genotypes(command, content, words, world, capsys):
  path = world / "g.json"
  path.write_bytes(content.encode("utf-8", "surrogateescape"))
  argv = [a if a != "DARTS_V2" else path for a in command_argv(command, world)] + ["--out", world / "new"]
  assert_refused(argv, world, capsys, "g.json", *words)


def test_a_genotype_file_that_is_a_folder(world, capsys):
  (world / "folder.json").mkdir()
  argv = command_argv("info", world)
  argv[argv.index("DARTS_V2")] = world / "folder.json"
  assert_refused(argv, world, capsys, "folder.json")


# --------------------------------------------------------------------------------------------------
# checkpoint directories


@pytest.mark.parametrize("content,words", [
    ('{"command": "train", "genotype": "Geno', ("result.json", "truncated")),
    ('{"command": "search", "genotype": "x", "space": "nb201"}', ("result.json", "search")),
    ('{"command": "train", "config": {}}', ("result.json", "genotype")),
    ('{"command": "train", "genotype": "DARTS_V2", "config": "lr=1"}', ("result.json", "config")),
    ("[]", ("result.json", "train")),
    ('{"command": "train", "genotype": "DARTS_V2", "config": {"epochs": "many"}, "data": "embedded"}',
     ("epochs",)),
])
def test_eval_of_a_checkpoint_dir_with_a_bad_result(content, words, world, capsys):
  (world / "trained" / "result.json").write_text(content)
  argv = command_argv("eval", world) + ["--out", world / "new"]
  assert_refused(argv, world, capsys, *words)


def test_eval_of_a_missing_checkpoint_dir(world, capsys):
  argv = command_argv("eval", world) + ["--checkpoint", world / "nowhere", "--out", world / "new"]
  assert_refused(argv, world, capsys, "nowhere")


def test_eval_of_a_dir_without_checkpoints(world, capsys):
  shutil.rmtree(world / "trained" / "checkpoints")
  argv = command_argv("eval", world) + ["--out", world / "new"]
  assert_refused(argv, world, capsys, "no checkpoint")


def foreign_checkpoint(workdir: pathlib.Path):
  """A checkpoint of another run (another identity) in ``workdir/checkpoints``."""
  from nasjax.utils import checkpoint as ckpt
  manager = ckpt.Manager(str(workdir / "checkpoints"))
  manager.save(1, {"w": np.zeros(2, np.float32)}, {"epoch": 1, "history": [], "identity": {"other": 1}})
  manager.close()


@pytest.mark.parametrize("command", ["train", "oneshot"])
def test_a_checkpoint_of_another_run_is_refused_before_any_work(command, world, capsys):
  foreign_checkpoint(world / "run")
  argv = command_argv(command, world) + ["--out", world / "run"]
  assert_refused(argv, world, capsys, "belongs to another run", "differs in")


def test_refused_restore_exits_cleanly(tmp_path, write_tiny_npz):
  """Refused in one line, and nothing prints at shutdown (no Orbax or asyncio thread left running)."""
  npz = write_tiny_npz(tmp_path / "tiny.npz", 64, 16)
  foreign_checkpoint(tmp_path / "run")
  before = snapshot(tmp_path)
  argv = command_argv("train", tmp_path)[:-2] + ["--data", npz, "--out", str(tmp_path / "run")]
  env = dict(os.environ, NASJAX_NO_COMPILATION_CACHE="1", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "nasjax.cli"] + argv, capture_output=True, text=True,
                        timeout=300, env=env)
  assert proc.returncode == 2, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and "another run" in lines[0], proc.stderr
  assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# property-based: the spaces' strings


PROPERTY_SETTINGS = settings(max_examples=25, derandomize=True, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def all_spaces():
  return {name: spaces.get_space(name) for name in spaces.SPACE_NAMES}


@pytest.mark.parametrize("name", spaces.SPACE_NAMES)
@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_every_space_round_trips_its_strings(name, seed, all_spaces):
  space = all_spaces[name]
  arch = space_sample(space, seed)
  text = space.to_string(arch)
  again = space.from_string(text)
  assert space.to_string(again) == text


def space_sample(space, seed: int) -> np.ndarray:
  """An architecture sampled by the space (its sampler compiled once per space)."""
  import jax
  return np.asarray(space_sample_cached(space)(jax.random.key(seed % 997)))


_SAMPLERS = {}


def space_sample_cached(space):
  import jax
  if space.name not in _SAMPLERS:
    _SAMPLERS[space.name] = jax.jit(space.sample)
  return _SAMPLERS[space.name]


def mutate_text(text: str, data) -> str:
  ops = data.draw(st.lists(st.tuples(st.sampled_from(["delete", "insert", "replace", "cut"]),
                                     st.integers(0, max(0, len(text) - 1)), st.text(max_size=3)),
                           min_size=1, max_size=3))
  for op, i, s in ops:
    if op == "delete":
      text = text[:i] + text[i + 1:]
    elif op == "insert":
      text = text[:i] + s + text[i:]
    elif op == "replace":
      text = text[:i] + s + text[i + 1:]
    else:
      text = text[:i]
  return text


@pytest.mark.parametrize("name", spaces.SPACE_NAMES)
@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2 ** 31 - 1), data=st.data())
def test_mutated_strings_parse_or_give_nasjax_error(name, seed, data, all_spaces):
  space = all_spaces[name]
  text = mutate_text(space.to_string(space_sample(space, seed)), data)
  try:
    arch = space.from_string(text)
  except NasjaxError:
    return
  # Accepted: then it is a valid architecture of the space, and prints to a string that parses to it.
  np.testing.assert_array_equal(space.from_string(space.to_string(arch)), arch)


@pytest.mark.parametrize("name", spaces.SPACE_NAMES)
@PROPERTY_SETTINGS
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
                      st.recursive(st.just("[]"), lambda inner: inner.map(lambda s: f"[{s}]"), max_leaves=50)))
def test_garbage_strings_give_nasjax_error(name, text, all_spaces):
  try:
    all_spaces[name].from_string(text)
  except NasjaxError:
    pass


@pytest.mark.parametrize("name", spaces.SPACE_NAMES)
def test_non_strings_and_deep_nesting_give_nasjax_error(name, all_spaces):
  space = all_spaces[name]
  for value in (None, 5, b"abc", "(" * 20_000, "[" * 20_000, "Genotype(" + "[" * 20_000):
    with pytest.raises(NasjaxError):
      space.from_string(value)


# --------------------------------------------------------------------------------------------------
# property-based: the data loader on generated archives


def archive_members(draw_arrays: dict) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **draw_arrays)
  return buf.getvalue()


image_dtypes = st.sampled_from([np.uint8, np.float32, np.float64, np.int16, np.int64, np.bool_, np.complex64])
label_dtypes = st.sampled_from([np.int32, np.int64, np.uint8, np.float32, np.bool_])


@st.composite
def archives(draw):
  arrays = {}
  for split in ("train", "test"):
    n = draw(st.integers(0, 6))
    shape = (n,) + tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=4)))
    dtype = draw(image_dtypes)
    arrays[f"x_{split}"] = draw(st.sampled_from([0.0, 0.5, 1.0, 7.0, -1.0, np.nan])) * np.ones(shape, dtype)
    m = draw(st.sampled_from([n, n + 1, max(0, n - 1)]))
    labels = np.asarray(draw(st.lists(st.integers(-2, 4), min_size=m, max_size=m)), np.int64)
    arrays[f"y_{split}"] = labels.astype(draw(label_dtypes))  # a negative label wraps in unsigned dtypes
  dropped = draw(st.sampled_from([None, "x_train", "y_test"]))
  if dropped:
    del arrays[dropped]
  return arrays


@PROPERTY_SETTINGS
@given(arrays=archives(), cut=st.one_of(st.none(), st.integers(0, 2000)))
def test_the_loader_on_generated_archives_accepts_valid_ones_and_refuses_the_rest(arrays, cut, tmp_path_factory):
  path = tmp_path_factory.mktemp("npz") / "gen.npz"
  payload = archive_members(arrays)
  if cut is not None:
    payload = payload[:cut]
  path.write_bytes(payload)
  try:
    ds = sources.load_dataset(str(path))
  except NasjaxError as e:
    assert "gen.npz" in str(e)
    return
  # Accepted: then it is a data set the rest of nasjax can use.
  assert cut is None or cut >= len(archive_members(arrays))
  assert ds.x_train.ndim == 4 and ds.x_train.dtype in (np.uint8, np.float32)
  assert ds.num_classes >= 2 and ds.y_train.min() >= 0 and max(ds.y_train.max(), ds.y_test.max()) < ds.num_classes
  assert len(ds.x_train) == len(ds.y_train) > 0 and len(ds.x_test) == len(ds.y_test) > 0
