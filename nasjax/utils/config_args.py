"""Command-line overrides driven by a config's own keys: every key of a ``ConfigDict`` is an option.

``--key-name VALUE`` or ``--key_name=VALUE`` sets ``cfg.key_name``; the value is read as the type of the
key's current value (int, float, str; a list or tuple as comma-separated values or JSON). A boolean key
is a flag: ``--flip`` / ``--no-flip`` (or ``--flip=false``). A key that is None takes JSON or text.
There is no list of accepted options to keep up to date: a config that gains a key gains the option, and
an unknown option is refused with the closest keys.
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Any

from nasjax.errors import NasjaxError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def option_name(key: str) -> str:
  return "--" + key.replace("_", "-")


def _parse_value(key: str, current: Any, text: str) -> Any:
  where = f"{option_name(key)}"
  if isinstance(current, bool):
    low = text.strip().lower()
    if low in _TRUE:
      return True
    if low in _FALSE:
      return False
    raise NasjaxError(f"{where} is a flag: write {where} or --no-{where[2:]} (or {where}=true/false); got {text!r}")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise NasjaxError(f"{where} takes an integer (now {current}); got {text!r}") from None
  if isinstance(current, float):
    try:
      value = float(text)
    except ValueError:
      raise NasjaxError(f"{where} takes a number (now {current}); got {text!r}") from None
    if math.isnan(value):
      raise NasjaxError(f"{where} takes a number (now {current}); got {text!r}")
    return value
  if isinstance(current, (list, tuple)):
    stripped = text.strip()
    if stripped.startswith("["):
      try:
        items = json.loads(stripped)
      except json.JSONDecodeError as e:
        raise NasjaxError(f"{where} takes a list (JSON or comma-separated); got {text!r}: {e.msg}") from None
      if not isinstance(items, list):
        raise NasjaxError(f"{where} takes a list; got {text!r}")
    else:
      items = [t.strip() for t in stripped.split(",") if t.strip()]
    like = current[0] if len(current) else None
    parsed = [_parse_value(key, like, str(v)) if like is not None and isinstance(v, str) else v for v in items]
    return type(current)(parsed)
  if current is None:
    try:
      return json.loads(text)
    except json.JSONDecodeError:
      return text
  return text


def settable_keys(cfg) -> list[str]:
  """The keys an option may set: every key whose value is not itself a config."""
  return [k for k in cfg.keys() if not hasattr(cfg[k], "keys")]


def parse_overrides(cfg, tokens: list[str], *, what: str) -> dict:
  """``{key: value}`` from option ``tokens`` for the keys of ``cfg`` (validated, not applied).

  ``what`` names the settings in messages (e.g. "nasjax search with estimator train").
  """
  keys = settable_keys(cfg)
  out: dict = {}
  i = 0
  while i < len(tokens):
    token = tokens[i]
    i += 1
    if not token.startswith("--") or token == "--":
      raise NasjaxError(f"unexpected argument {token!r}; options are written --name VALUE")
    name, eq, value = token[2:].partition("=")
    key = name.replace("-", "_")
    negated = False
    if key not in keys and key.startswith("no_") and isinstance(cfg.get(key[3:]), bool):
      key, negated = key[3:], True
    if key not in keys:
      close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
      hint = (f"did you mean {' or '.join(option_name(k) for k in close)}?" if close else
              "accepted: " + ", ".join(option_name(k) for k in sorted(keys)))
      raise NasjaxError(f"unknown option --{name} for {what}; {hint} (--show-config lists the settings)")
    current = cfg[key]
    if isinstance(current, bool):
      if negated:
        if eq:
          raise NasjaxError(f"--no-{name[3:] if name.startswith('no-') else name} takes no value")
        out[key] = False
      else:
        out[key] = _parse_value(key, current, value) if eq else True
      continue
    if not eq:
      if i >= len(tokens):
        raise NasjaxError(f"{option_name(key)} needs a value (now {current!r})")
      value = tokens[i]
      i += 1
    out[key] = _parse_value(key, current, value)
  return out


def apply_overrides(cfg, tokens: list[str], *, what: str) -> dict:
  """Sets the options in ``tokens`` on ``cfg`` (see :func:`parse_overrides`); returns what was set."""
  values = parse_overrides(cfg, tokens, what=what)
  for key, value in values.items():
    try:
      cfg[key] = value
    except (TypeError, ValueError) as e:
      raise NasjaxError(f"{option_name(key)}: {e}") from None
  return values
