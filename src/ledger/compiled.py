"""Plain-Python validators compiled from strict pydantic models: the gate's fast path.

pydantic checks an invoice's envelope and payload in ~11 us, most of it in calls from its Rust
core back into the contract's Python validators (money, dates, currency, time, tenant). The same
checks written out as one Python function per model take about a third of that. This module writes
those functions from the models themselves (their type hints and constraints), so the pydantic
models stay the one statement of the contract: a field's type or limit changes in one place.

A compiled validator only ever agrees. It returns what pydantic would (the same values, the same
model instance) or raises `Bail`: at a wrong type, a str or int subclass, a `Decimal` or `date`
from a Python caller, a value out of bounds, anything it would have to explain. The caller then
runs pydantic, which accepts the event or words the rejection. So an error never comes from here,
and a validator that bails too often is only slow. `tests/ledger/test_compiled.py` holds the two
paths equal on every valid example and on thousands of generated mutations of them.

What it understands is what the contract uses: `str` with `StringConstraints` (lengths and the
two patterns `no_control_characters` and `no_nul`), `bool`, `int` with `ge`, `Literal` of
strings, `list[Model]` with `min_length`/`max_length`, `X | None = None`, `dict[str, Any]` (only
as a slot whose keys the caller checks against its payload model), and a `BeforeValidator` the
caller translates. Anything else fails at import: a new kind of field gets a translation here
before it gets a fast path.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from string import Template
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, MaxLen, MinLen
from pydantic import BaseModel, BeforeValidator, StringConstraints, WithJsonSchema
from pydantic.fields import FieldInfo


class Bail(Exception):  # not an error: "ask pydantic"
    """The fast path is not sure: validate with pydantic instead."""


# pydantic refuses a str holding a lone surrogate (it cannot be UTF-8); so must the fast path. An
# ASCII string (nearly every id and amount) cannot hold one, and `isascii` is O(1).
_surrogate = re.compile("[\ud800-\udfff]").search


@dataclass(frozen=True, slots=True)
class Translation:
    """Python source for one check on `v`, with `$name` placeholders for the objects in `names`.

    For a `BeforeValidator(func)`: statements that validate `v` and may replace it with the
    validated value, raising `Bail` when not sure. For a string pattern: a condition that is true
    when `v` does NOT match the pattern."""

    code: str
    names: dict[str, Any]


@dataclass
class _Writer:
    patterns: dict[str, Translation]
    translations: dict[Callable[..., Any], Translation]
    namespace: dict[str, Any]

    def name(self, value: Any, hint: str) -> str:
        """A global of the generated code bound to `value`."""
        for existing, bound in self.namespace.items():
            if bound is value and existing.startswith(hint):
                return existing
        name = f"{hint}{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def code(self, translation: Translation) -> str:
        return Template(translation.code).substitute(
            {name: self.name(value, f"_{name}") for name, value in translation.names.items()}
        )


def _constraints(hint: Any, info: FieldInfo | None) -> tuple[Any, list[Any]]:
    """The value type and its constraints, from `Annotated[...]` or from `Field(...)`."""
    if get_origin(hint) is Annotated:
        base, *metadata = get_args(hint)
        return base, list(metadata)
    return hint, list(info.metadata) if info is not None else []


def _optional_member(hint: Any) -> Any | None:
    if get_origin(hint) in (Union, types.UnionType):
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(members) == 1 and len(get_args(hint)) == 2:
            return members[0]
    return None


def _string_checks(writer: _Writer, constraints: list[Any]) -> str:
    low, high, conditions = 0, None, []
    for constraint in constraints:
        if isinstance(constraint, StringConstraints):
            if constraint.min_length is not None:
                low = max(low, constraint.min_length)
            if constraint.max_length is not None:
                high = constraint.max_length if high is None else min(high, constraint.max_length)
            if constraint.pattern is not None:
                pattern = writer.patterns.get(str(constraint.pattern))
                if pattern is None:
                    raise NotImplementedError(f"no fast check for pattern {constraint.pattern!r}")
                conditions.append(writer.code(pattern))
            unsupported = (constraint.strip_whitespace, constraint.to_upper, constraint.to_lower)
            if any(unsupported) or constraint.ascii_only or constraint.strict is False:
                raise NotImplementedError(f"no fast check for {constraint!r}")
        elif not isinstance(constraint, WithJsonSchema):
            raise NotImplementedError(f"no fast check for {constraint!r} on a str")
    length = f"{low} <= len(v)" + (f" <= {high}" if high is not None else "")
    surrogate = writer.name(_surrogate, "_surrogate")
    checks = ["type(v) is not str", f"not ({length})", *conditions]
    checks.append(f"(not v.isascii() and {surrogate}(v) is not None)")
    return f"if {' or '.join(checks)}: raise Bail"


def _value_code(writer: _Writer, hint: Any, info: FieldInfo | None, indent: str) -> list[str]:
    """Lines that check `v` (and may replace it with the validated value)."""
    base, constraints = _constraints(hint, info)
    validators = [c for c in constraints if isinstance(c, BeforeValidator)]
    if validators:
        [validator] = validators
        translation = writer.translations.get(validator.func)
        others = [c for c in constraints if not isinstance(c, BeforeValidator | WithJsonSchema)]
        if translation is None or others:
            raise NotImplementedError(f"no fast translation of {validator.func!r} with {others}")
        return [indent + line for line in writer.code(translation).splitlines()]
    if base is str:
        return [indent + _string_checks(writer, constraints)]
    if base is bool and not constraints:
        return [f"{indent}if type(v) is not bool: raise Bail"]
    if base is int:
        bounds: list[Any] = []
        for constraint in constraints:
            bounds += constraint.metadata if isinstance(constraint, FieldInfo) else [constraint]
        if not all(isinstance(c, Ge) for c in bounds):
            raise NotImplementedError(f"no fast check for {bounds!r} on an int")
        low = max((c.ge for c in bounds), default=None)
        check = "type(v) is not int" + (f" or v < {low!r}" if low is not None else "")
        return [f"{indent}if {check}: raise Bail"]
    if get_origin(base) is Literal and not constraints:
        options = get_args(base)
        if not all(type(option) is str for option in options):
            raise NotImplementedError(f"no fast check for {base!r}")
        literals = writer.name(frozenset(options), "_literals")
        return [f"{indent}if type(v) is not str or v not in {literals}: raise Bail"]
    if get_origin(base) is dict and get_args(base) == (str, Any) and not constraints:
        return [f"{indent}if type(v) is not dict: raise Bail"]
    if get_origin(base) is list:
        [item] = get_args(base)
        if not (isinstance(item, type) and issubclass(item, BaseModel)):
            raise NotImplementedError(f"no fast check for {base!r}")
        low, high = 0, None
        for constraint in constraints:
            if isinstance(constraint, MinLen):
                low = constraint.min_length
            elif isinstance(constraint, MaxLen):
                high = constraint.max_length
            else:
                raise NotImplementedError(f"no fast check for {constraint!r} on a list")
        length = f"{low} <= len(v)" + (f" <= {high}" if high is not None else "")
        check = writer.name(_compile(writer, item, construct=True), f"_check_{item.__name__}")
        return [
            f"{indent}if type(v) is not list or not ({length}): raise Bail",
            f"{indent}v = [{check}(item) for item in v]",
        ]
    raise NotImplementedError(f"no fast check for {hint!r}")


def _compile(writer: _Writer, model: type[BaseModel], *, construct: bool) -> Callable[[Any], Any]:
    config = model.model_config
    if config.get("extra") != "forbid" or not config.get("strict"):
        raise NotImplementedError(f"{model.__name__}: only strict models that forbid extras")
    if set(config) - {"extra", "strict", "frozen"}:
        # e.g. str_strip_whitespace or str_max_length change every field: not read here.
        raise NotImplementedError(f"{model.__name__}: settings {sorted(config)} not compiled")
    if model.__pydantic_post_init__ or model.__private_attributes__:
        raise NotImplementedError(f"{model.__name__}: no post-init or private attributes")
    hints = typing.get_type_hints(model, include_extras=True)
    fields = model.model_fields
    required = frozenset(name for name, info in fields.items() if info.is_required())
    allowed = frozenset(fields)
    lines = [
        "def check(raw):",
        "    if type(raw) is not dict: raise Bail",
        "    keys = raw.keys()",
        f"    if not (keys <= {writer.name(allowed, '_allowed')} and "
        f"{writer.name(required, '_required')} <= keys): raise Bail",
    ]
    for index, (name, info) in enumerate(fields.items()):
        if info.alias is not None or info.validation_alias is not None:
            raise NotImplementedError(f"{model.__name__}.{name}: no aliases")
        hint = hints[name]
        if get_origin(hint) is Annotated and any(
            constraint not in get_args(hint)[1:] for constraint in info.metadata
        ):
            # `Field(...)` limits on top of the type's own: not read here, so not compiled.
            raise NotImplementedError(f"{model.__name__}.{name}: Field() limits on an Annotated")
        if name in required:
            lines.append(f"    v = raw[{name!r}]")
            lines += _value_code(writer, hint, info, "    ")
        else:
            if info.default is not None:
                raise NotImplementedError(f"{model.__name__}.{name}: optional means None")
            member = _optional_member(hint)
            if member is None:
                raise NotImplementedError(f"{model.__name__}.{name}: optional means X | None")
            lines.append(f"    v = raw.get({name!r})")
            lines.append("    if v is not None:")
            lines += _value_code(writer, member, info, "        ")
        lines.append(f"    f{index} = v")
    values = ", ".join(f"{name!r}: f{index}" for index, name in enumerate(fields))
    if construct:
        # What `model_construct` does, without looking up aliases and defaults per call.
        cls = writer.name(model, f"_{model.__name__}")
        lines += [
            f"    made = {cls}.__new__({cls})",
            f"    setattr(made, '__dict__', {{{values}}})",
            "    setattr(made, '__pydantic_fields_set__', set(keys))",
            "    setattr(made, '__pydantic_extra__', None)",
            "    setattr(made, '__pydantic_private__', None)",
            "    return made",
        ]
    else:
        lines.append(f"    return {{{values}}}")
    source = "\n".join(lines)
    namespace = {**writer.namespace, "Bail": Bail, "setattr": object.__setattr__}
    exec(
        compile(source, f"<fast check of {model.__name__}>", "exec"), namespace
    )  # the source is ours, made above
    check: Callable[[Any], Any] = namespace["check"]
    check.__doc__ = source  # what was compiled, for a reader in a debugger
    return check


def compile_validator(
    model: type[BaseModel],
    *,
    patterns: dict[str, Translation],
    translations: dict[Callable[..., Any], Translation],
    construct: bool = True,
) -> Callable[[Any], Any]:
    """A function of a raw (JSON-shaped) dict: the model instance pydantic's `model_validate`
    would make (`construct`), or the dict of its field values (not `construct`); raises `Bail`
    where not sure. `patterns` translates each `StringConstraints.pattern` the models use,
    `translations` each `BeforeValidator`'s function."""
    writer = _Writer(patterns, translations, {})
    return _compile(writer, model, construct=construct)
