"""TOML configuration files read whole, with errors a technician can act on.

Every problem names the file, the key and the fix, all at once, with the key
that was probably meant for a misspelt one. The agent's and the controller's
configurations both load through here.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import msgspec

from plumbing.validation import Check, Faults, Problem, apply_field_checks, convert, struct_of

M = TypeVar("M", bound=msgspec.Struct)


class ConfigFileError(Exception):
    """A configuration file that cannot be used; the message says how to fix it."""


class Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One [section] of a configuration file: unknown keys are errors, values frozen.

    Read as TOML gives it (``strict=False``: "8080" is 8080). A section's rules on one
    key go in ``field_checks`` (reported at that key), those across keys in ``check``.
    Each subclass says ``frozen=True, kw_only=True`` again, for mypy and for msgspec."""

    field_checks: ClassVar[dict[str, Check]] = {}

    def __post_init__(self) -> None:
        apply_field_checks(self)
        self.check()

    def check(self) -> None:
        """The rules across keys; raise ValueError saying how to fix it."""


FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it",
    "string_pattern_mismatch": "use 1-48 characters of a-z, 0-9 and '-'",
    "greater_than": "use a larger number",
    "greater_than_equal": "use a larger number",
    "less_than_equal": "use a smaller number",
    "bool_type": "write true or false",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number",
    "float_parsing": "write a number",
    "float_type": "write a number",
    "string_type": 'write text in quotes, like "..."',
}


def read_toml(path: Path, error: type[Exception] = ConfigFileError) -> dict[str, Any]:
    """The file's TOML as a dict, or ``error`` saying why it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read the configuration: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def _known_keys(model: type[Any], loc: tuple[Any, ...], hidden: frozenset[str]) -> list[str]:
    """The keys allowed at ``loc`` (for suggestions on a misspelt key)."""
    current: type[Any] | None = model
    for part in loc[:-1]:
        if current is None:
            return []
        types = {f.encode_name: f.type for f in msgspec.structs.fields(current)}
        current = struct_of(types[part]) if isinstance(part, str) and part in types else None
    if current is None:
        return []
    return [k for k in current.__struct_encode_fields__ if k not in hidden]


def describe(
    path: Path, problems: list[Problem], model: type[Any], what: str, hidden: frozenset[str]
) -> str:
    lines = [f"{path}: {len(problems)} problem(s) in the {what}:"]
    for problem in problems:
        loc = problem.loc
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:]).lstrip(".")
        where = f"[{loc[0]}] {key}" if key else f"[{loc[0]}]" if loc else "(file)"
        fix = FIXES.get(problem.kind, "")
        if problem.kind == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc, hidden), n=2)
            if close:
                fix = "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        lines.append(f"  - {where}: {problem.msg}" + (f" ({fix})" if fix else ""))
    return "\n".join(lines)


def validate(
    model: type[M],
    data: dict[str, Any],
    path: Path,
    *,
    what: str,
    error: type[Exception] = ConfigFileError,
    hidden: frozenset[str] = frozenset(),
) -> M:
    """``model`` from ``data``, or ``error`` listing every fault in ``path``."""
    try:
        return convert(data, model, strict=False)
    except Faults as exc:
        raise error(describe(path, exc.problems, model, what, hidden)) from None
