"""TOML configuration files read whole, with errors a technician can act on.

Every problem names the file, the key and the fix, all at once, with the key
that was probably meant for a misspelt one. The agent's and the controller's
configurations both load through here.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(Exception):
    """A configuration file that cannot be used; the message says how to fix it."""


class Section(BaseModel):
    """One [section] of a configuration file: unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...], hidden: frozenset[str]) -> list[str]:
    """The keys allowed at ``loc`` (for suggestions on a misspelt key)."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type):
            return []
        current = field.annotation
        if not issubclass(current, BaseModel):
            return []
    return [k for k in current.model_fields if k not in hidden]


def describe(
    path: Path, exc: ValidationError, model: type[BaseModel], what: str, hidden: frozenset[str]
) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s) in the {what}:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:]).lstrip(".")
        where = f"[{loc[0]}] {key}" if key else f"[{loc[0]}]" if loc else "(file)"
        fix = FIXES.get(err["type"], "")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc, hidden), n=2)
            if close:
                fix = "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {where}: {message}" + (f" ({fix})" if fix else ""))
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
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(describe(path, exc, model, what, hidden)) from None
