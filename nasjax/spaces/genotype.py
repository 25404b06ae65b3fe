"""Cell genotypes in the notation of the DARTS repository.

Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019. A genotype lists, for the
normal and the reduction cell, two ``(op, input)`` entries per intermediate node, in node order; input 0
and 1 are the cell's two inputs and ``k >= 2`` is intermediate node ``k - 2``. ``*_concat`` lists the
node indices (same numbering) whose outputs are concatenated into the cell output. The same notation
carries the NASNet, AmoebaNet and ENAS cells (5 nodes instead of 4), as in DARTS' ``genotypes.py``.

:meth:`Genotype.from_string` reads that notation with a small tokenizer and a recursive-descent parser;
user text is never evaluated.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nasjax.errors import NasjaxError

_EXPECTED = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5], "
             "reduce=[('max_pool_3x3', 0), ...], reduce_concat=[2, 3, 4, 5])")
_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")
_OP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _err(msg: str) -> NasjaxError:
  return NasjaxError(f"{msg}; expected format: {_EXPECTED}")


def _as_cell(field: str, value: Any) -> tuple[tuple[str, int], ...]:
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise _err(f"genotype field {field!r} must be a list of (op, input) pairs; got {value!r}")
  entries = []
  for k, entry in enumerate(value):
    if (isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2):
      raise _err(f"{field}[{k}] must be an (op, input) pair; got {entry!r}")
    op, inp = entry
    if not isinstance(op, str) or not _OP_NAME.match(op):
      raise _err(f"{field}[{k}]: op must be a name like 'sep_conv_3x3'; got {op!r}")
    if not isinstance(inp, int) or isinstance(inp, bool) or inp < 0:
      raise _err(f"{field}[{k}]: input must be a non-negative integer; got {inp!r}")
    entries.append((op, inp))
  if not entries or len(entries) % 2:
    raise _err(f"genotype field {field!r} must hold 2 entries per node (a non-zero even count); "
               f"got {len(entries)}")
  return tuple(entries)


def _as_concat(field: str, value: Any) -> tuple[int, ...]:
  if isinstance(value, range):
    value = list(value)
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise _err(f"genotype field {field!r} must be a list of node indices; got {value!r}")
  out = []
  for v in value:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
      raise _err(f"{field}: node indices must be non-negative integers; got {v!r}")
    out.append(v)
  if not out:
    raise _err(f"genotype field {field!r} must name at least one node")
  if len(set(out)) != len(out):
    raise _err(f"genotype field {field!r} repeats a node: {out}")
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class Genotype:
  """A discrete cell pair: ``normal``/``reduce`` hold 2 ``(op, input)`` entries per node, in order."""

  normal: tuple[tuple[str, int], ...]
  normal_concat: tuple[int, ...]
  reduce: tuple[tuple[str, int], ...]
  reduce_concat: tuple[int, ...]

  def __post_init__(self):
    # Lists (as written in papers' code) are accepted and frozen so the genotype stays hashable.
    object.__setattr__(self, "normal", _as_cell("normal", self.normal))
    object.__setattr__(self, "normal_concat", _as_concat("normal_concat", self.normal_concat))
    object.__setattr__(self, "reduce", _as_cell("reduce", self.reduce))
    object.__setattr__(self, "reduce_concat", _as_concat("reduce_concat", self.reduce_concat))

  @property
  def num_nodes(self) -> int:
    return len(self.normal) // 2

  def to_string(self) -> str:
    """The DARTS repository notation, e.g. ``Genotype(normal=[('sep_conv_3x3', 0), ...], ...)``."""
    def cell(entries):
      return "[" + ", ".join(f"('{op}', {i})" for op, i in entries) + "]"

    def concat(nodes):
      return "[" + ", ".join(str(n) for n in nodes) + "]"

    return (f"Genotype(normal={cell(self.normal)}, normal_concat={concat(self.normal_concat)}, "
            f"reduce={cell(self.reduce)}, reduce_concat={concat(self.reduce_concat)})")

  __str__ = to_string

  @classmethod
  def from_string(cls, s: str) -> "Genotype":
    """Parses the DARTS notation (either quote style, ``range(a, b)`` or list concat, any whitespace;
    an optional ``NAME =`` prefix as in ``genotypes.py``). Raises NasjaxError on anything else."""
    if not isinstance(s, str):
      raise _err(f"a genotype string is required; got {type(s).__name__}")
    return _Parser(s).parse()

  def to_json(self) -> dict:
    return {"normal": [[op, i] for op, i in self.normal], "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce], "reduce_concat": list(self.reduce_concat)}

  @classmethod
  def from_json(cls, data: Any) -> "Genotype":
    if not isinstance(data, Mapping):
      raise _err(f"a genotype JSON object with keys {', '.join(_FIELDS)} is required; "
                 f"got {type(data).__name__}")
    keys = set(data)
    if keys != set(_FIELDS):
      missing = [k for k in _FIELDS if k not in keys]
      extra = sorted(str(k) for k in keys - set(_FIELDS))
      raise _err(f"genotype JSON keys must be exactly {', '.join(_FIELDS)}"
                 + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
    return cls(**{k: data[k] for k in _FIELDS})


# ------------------------------------------------------------------------------------------- parser
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<int>-?[0-9]+)
  | (?P<str>'[^'\\\n]*'|"[^"\\\n]*")
  | (?P<punct>[()\[\],=])
""", re.VERBOSE)


@dataclasses.dataclass(frozen=True)
class _Tok:
  kind: str  # ident, int, str, punct, eof
  text: str
  pos: int


def _tokenize(s: str) -> list[_Tok]:
  toks, pos = [], 0
  while pos < len(s):
    m = _TOKEN.match(s, pos)
    if m is None:
      ch = s[pos]
      hint = " (unterminated string?)" if ch in "'\"" else ""
      raise _err(f"malformed genotype string: unexpected character {ch!r}{hint} at {_where(s, pos)}")
    if m.lastgroup != "ws":
      toks.append(_Tok(m.lastgroup, m.group(), pos))
    pos = m.end()
  toks.append(_Tok("eof", "", len(s)))
  return toks


def _where(s: str, pos: int) -> str:
  line = s.count("\n", 0, pos) + 1
  col = pos - (s.rfind("\n", 0, pos) + 1) + 1
  snippet = s[max(0, pos - 15):pos + 25].replace("\n", " ")
  return f"line {line}, column {col} (near {snippet!r})"


class _Parser:
  """Recursive descent over the tokens; builds plain Python values, never evaluates text."""

  def __init__(self, s: str):
    self.s = s
    self.toks = _tokenize(s)
    self.i = 0

  def peek(self, ahead: int = 0) -> _Tok:
    return self.toks[min(self.i + ahead, len(self.toks) - 1)]

  def fail(self, what: str, tok: _Tok | None = None) -> NasjaxError:
    tok = tok or self.peek()
    found = "end of input" if tok.kind == "eof" else repr(tok.text)
    return _err(f"malformed genotype string: expected {what}, found {found} at {_where(self.s, tok.pos)}")

  def take(self, kind: str, text: str | None = None, what: str | None = None) -> _Tok:
    tok = self.peek()
    if tok.kind != kind or (text is not None and tok.text != text):
      raise self.fail(what or (repr(text) if text else kind))
    self.i += 1
    return tok

  def accept(self, kind: str, text: str) -> bool:
    tok = self.peek()
    if tok.kind == kind and tok.text == text:
      self.i += 1
      return True
    return False

  def parse(self) -> Genotype:
    # Optional "NAME =" prefix, as the genotypes are written in DARTS' genotypes.py.
    if self.peek().kind == "ident" and self.peek(1).text == "=" and self.peek(2).text == "Genotype":
      self.i += 2
    tok = self.peek()
    if tok.kind != "ident" or tok.text != "Genotype":
      raise self.fail("'Genotype('")
    self.i += 1
    self.take("punct", "(", "'(' after 'Genotype'")
    values: dict[str, Any] = {}
    while not self.accept("punct", ")"):
      name_tok = self.peek()
      if name_tok.kind != "ident":
        raise self.fail(f"a field name ({', '.join(_FIELDS)}) or ')'")
      if name_tok.text not in _FIELDS:
        raise _err(f"malformed genotype string: unknown field {name_tok.text!r} at "
                   f"{_where(self.s, name_tok.pos)}; accepted fields: {', '.join(_FIELDS)}")
      if name_tok.text in values:
        raise _err(f"malformed genotype string: field {name_tok.text!r} given twice at "
                   f"{_where(self.s, name_tok.pos)}")
      self.i += 1
      self.take("punct", "=", f"'=' after {name_tok.text!r}")
      if name_tok.text.endswith("concat"):
        values[name_tok.text] = self.concat()
      else:
        values[name_tok.text] = self.cell()
      if not self.accept("punct", ","):
        self.take("punct", ")", "',' or ')'")
        break
    if self.peek().kind != "eof":
      raise self.fail("end of input after the closing ')'")
    missing = [f for f in _FIELDS if f not in values]
    if missing:
      raise _err(f"malformed genotype string: missing field(s) {', '.join(missing)}")
    return Genotype(**values)

  def _open(self) -> str:
    tok = self.peek()
    if tok.kind == "punct" and tok.text in "[(":
      self.i += 1
      return "]" if tok.text == "[" else ")"
    raise self.fail("'[' opening a list")

  def cell(self) -> list[tuple[str, int]]:
    close = self._open()
    entries = []
    while not self.accept("punct", close):
      self.take("punct", "(", f"'(' opening an (op, input) pair or {close!r}")
      op = self.take("str", what="a quoted op name like 'sep_conv_3x3'")
      self.take("punct", ",", "',' between op and input")
      inp = self.take("int", what="an integer input index")
      self.accept("punct", ",")
      self.take("punct", ")", "')' closing the (op, input) pair")
      entries.append((op.text[1:-1], self._int(inp)))
      if not self.accept("punct", ","):
        self.take("punct", close, f"',' or {close!r}")
        break
    return entries

  def concat(self) -> list[int]:
    tok = self.peek()
    if tok.kind == "ident":
      if tok.text != "range":
        raise self.fail("a list of node indices or range(a, b)")
      self.i += 1
      self.take("punct", "(", "'(' after 'range'")
      args = [self._int(self.take("int", what="an integer"))]
      if self.accept("punct", ","):
        args.append(self._int(self.take("int", what="an integer")))
      self.take("punct", ")", "')' closing range(...)")
      return list(range(*args))
    close = self._open()
    out = []
    while not self.accept("punct", close):
      out.append(self._int(self.take("int", what=f"an integer node index or {close!r}")))
      if not self.accept("punct", ","):
        self.take("punct", close, f"',' or {close!r}")
        break
    return out

  def _int(self, tok: _Tok) -> int:
    if tok.text.startswith("-"):
      raise _err(f"malformed genotype string: negative index {tok.text} at {_where(self.s, tok.pos)}")
    if len(tok.text) > 6:
      raise _err(f"malformed genotype string: index {tok.text[:12]}... is too large at "
                 f"{_where(self.s, tok.pos)}")
    return int(tok.text)
