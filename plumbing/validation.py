"""Every fault of some data against a msgspec type, not only the first.

msgspec stops at the first fault; a technician fixing a configuration file, or
whoever reads a refusal, wants them all. ``problems`` checks each field alone
(into nested structs and lists of them), the unknown and the missing keys, and,
once every field fits, the whole for the cross-field rules (``__post_init__``).
Each problem has a kind that callers map to a fix ("missing": add it) and a
message in plain words ("Field required", "Input should be greater than 0").

A Struct's rules on one field go in its ``field_checks`` (name: a function that
returns the value, maybe tidied, or raises ValueError), so that a fault there is
reported at the field; its ``__post_init__`` applies them (``apply_field_checks``).
Paths convert from text.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypeVar, Union, get_args, get_origin

import msgspec

T = TypeVar("T")
Loc = tuple[str | int, ...]


class Problem(NamedTuple):
    loc: Loc
    kind: str
    msg: str

    def __str__(self) -> str:
        return f"{'.'.join(str(p) for p in self.loc) or '(root)'}: {self.msg}"


class Faults(msgspec.ValidationError, ValueError):
    """A ``msgspec.ValidationError`` listing every problem, one ``loc`` and message each; a
    ``ValueError`` too, as a bad value is."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [f"{len(problems)} validation error(s)"]
        for p in problems:
            lines += [".".join(str(part) for part in p.loc) or "(root)", f"  {p.msg}"]
        super().__init__("\n".join(lines))


Check = Callable[[Any], Any]


def apply_field_checks(struct: msgspec.Struct) -> None:
    """Run ``struct``'s ``field_checks``, keeping what they return (for ``__post_init__``)."""
    checks: dict[str, Check] = getattr(struct, "field_checks", {})
    for name, check in checks.items():
        msgspec.structs.force_setattr(struct, name, check(getattr(struct, name)))


def _dec_hook(type_: Any, value: Any) -> Any:
    if type_ is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ValueError("Input should be a path, as text")
    raise NotImplementedError(type_)


def convert(data: Any, type_: type[T], *, strict: bool = True) -> T:
    """``data`` as ``type_``, or ``Faults`` listing every problem."""
    try:
        return msgspec.convert(data, type=type_, strict=strict, dec_hook=_dec_hook)
    except msgspec.ValidationError:
        raise Faults(problems(data, type_, strict=strict)) from None


def problems(data: Any, type_: Any, *, strict: bool = True, loc: Loc = ()) -> list[Problem]:
    """Every problem of ``data`` as ``type_``; empty when it converts."""
    struct = struct_of(type_)
    if struct is not None and isinstance(data, dict):
        found = _field_problems(data, struct, strict, loc)
        if found:
            return found
    items = struct_of(_item_type(type_))
    if items is not None and isinstance(data, list):
        found = [
            p
            for i, item in enumerate(data)
            for p in problems(item, items, strict=strict, loc=(*loc, i))
        ]
        if found:
            return found
    try:
        msgspec.convert(data, type=type_, strict=strict, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        return [_problem(str(exc), loc)]
    return []


def _field_problems(
    data: dict[Any, Any], struct: type[Any], strict: bool, loc: Loc
) -> list[Problem]:
    found: list[Problem] = []
    fields = msgspec.structs.fields(struct)
    names = {f.encode_name for f in fields}
    checks: dict[str, Check] = getattr(struct, "field_checks", {})
    for field in fields:
        where = (*loc, field.encode_name)
        if field.encode_name in data:
            faults = problems(data[field.encode_name], field.type, strict=strict, loc=where)
            found += faults
            if not faults and field.name in checks:
                try:
                    checks[field.name](convert(data[field.encode_name], field.type, strict=strict))
                except ValueError as exc:
                    found.append(Problem(where, "value_error", str(exc)))
        elif field.required:
            found.append(Problem((*loc, field.encode_name), "missing", "Field required"))
    if struct.__struct_config__.forbid_unknown_fields:
        found += [
            Problem((*loc, key), "extra_forbidden", "Extra inputs are not permitted")
            for key in data
            if key not in names
        ]
    return found


def _unwrap(type_: Any) -> Any:
    """``type_`` without ``Annotated`` and without ``None`` in a union of one other type."""
    while get_origin(type_) is Annotated:
        type_ = get_args(type_)[0]
    if get_origin(type_) in (Union, types.UnionType):
        others = [t for t in get_args(type_) if t is not type(None)]
        if len(others) == 1:
            return _unwrap(others[0])
    return type_


def struct_of(type_: Any) -> type[Any] | None:
    type_ = _unwrap(type_)
    return type_ if isinstance(type_, type) and issubclass(type_, msgspec.Struct) else None


def _item_type(type_: Any) -> Any:
    type_ = _unwrap(type_)
    return get_args(type_)[0] if get_origin(type_) in (list, tuple, set, frozenset) else None


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[([^\]]*)\]")
_NAMES = {
    "int": ("int_type", "Input should be a valid integer"),
    "float": ("float_type", "Input should be a valid number"),
    "str": ("string_type", "Input should be a valid string"),
    "bool": ("bool_type", "Input should be a valid boolean"),
    "object": ("dict_type", "Input should be a valid dictionary"),
    "array": ("list_type", "Input should be a valid list"),
    "null": ("none_type", "Input should be None"),
}
_BOUNDS = {
    ">=": "greater_than_equal",
    ">": "greater_than",
    "<=": "less_than_equal",
    "<": "less_than",
}
_BOUND_WORDS = {
    ">=": "greater than or equal to",
    ">": "greater than",
    "<=": "less than or equal to",
    "<": "less than",
}
_SIZES = {
    "str": ("string", "String", "characters"),
    "array": ("", "List", "items"),
    "object": ("", "Dictionary", "items"),
}


def _problem(text: str, loc: Loc) -> Problem:
    """A problem from msgspec's message, worded plainly, where msgspec says it is."""
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    msg, path = match["msg"], match["path"] or ""
    for part in _PART.finditer(path):
        loc = (*loc, part[1] if part[1] is not None else int(part[2]) if part[2] else part[3])
    if m := re.fullmatch(r"Object missing required field `(.+)`", msg):
        return Problem((*loc, m[1]), "missing", "Field required")
    if m := re.fullmatch(r"Object contains unknown field `(.+)`", msg):
        return Problem((*loc, m[1]), "extra_forbidden", "Extra inputs are not permitted")
    return Problem(loc, *_worded(msg))


def _worded(msg: str) -> tuple[str, str]:
    if m := re.fullmatch(r"Expected `([a-z]+)[^`]*`, got `[^`]+`", msg):
        return _NAMES.get(m[1], ("type_error", msg))
    if m := re.fullmatch(r"Expected `(int|float)` (>=|>|<=|<) (\S+)", msg):
        bound = m[3].removesuffix(".0")  # msgspec says 0.0 for a float's bound of 0
        return _BOUNDS[m[2]], f"Input should be {_BOUND_WORDS[m[2]]} {bound}"
    if m := re.fullmatch(r"Expected `(str|array|object)` of length (>=|<=) (\d+)", msg):
        prefix, noun, unit = _SIZES[m[1]]
        kind = f"{prefix}_too_{'long' if m[2] == '<=' else 'short'}".lstrip("_")
        return kind, f"{noun} should have at {'most' if m[2] == '<=' else 'least'} {m[3]} {unit}"
    if m := re.fullmatch(r"Expected `str` matching regex (.+)", msg):
        return "string_pattern_mismatch", f"String should match pattern {m[1]}"
    if m := re.fullmatch(r"Invalid enum value (.+)", msg):
        return "literal_error", f"Input should be one of the allowed values, not {m[1]}"
    return "value_error", msg
