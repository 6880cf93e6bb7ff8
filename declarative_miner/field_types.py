"""The types a request type's fields are declared with, as YAML writes them, and pydantic's form of each.

    str  int  float  bool      strict: "3" is not an int (a JSON integer is a float, though)
    bytes                      base64 text on the wire, as pydantic and bittensor 10 encode it
    any                        any JSON value: object, array, string, number, true/false, null
    list[T]  dict[str, T]  optional[T]
    NAME                       an object type declared under `types` (or the built-in Tensor)

An object type is a mapping of its fields to their types, declared once under `types:` and named by
fields anywhere (`sampling: SamplingParams`, `list[Tensor]`). A request's answering callable sees
objects as dicts and bytes as bytes.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from typing import Annotated, Any, Mapping, Optional

import pydantic
from pydantic import BeforeValidator, JsonValue, PlainSerializer, StrictBool, StrictFloat, StrictInt, StrictStr


GRAMMAR = "str, int, float, bool, bytes, any, list[T], dict[str, T], optional[T] or a type named under `types`"
_GENERIC = re.compile(r"(list|dict|optional)\[(.*)\]", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _from_base64(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64 text") from None
    return value


Bytes = Annotated[bytes, BeforeValidator(_from_base64),
                  PlainSerializer(lambda value: base64.b64encode(value).decode(), return_type=str, when_used="json")]
SCALARS = {"str": StrictStr, "int": StrictInt, "float": StrictFloat, "bool": StrictBool, "bytes": Bytes, "any": JsonValue}
BUILT_IN = {"Tensor": {"buffer": "bytes", "dtype": "str", "shape": "list[int]"}}  # bittensor 10's bt.Tensor, as JSON


def parse_type(text: Any, objects: Mapping[str, Any] = {}) -> Any:
    """The pydantic type a declaration names; ValueError for anything else. `objects`: the object
    types declared so far, by name."""
    text = str(text).strip()
    if text in SCALARS:
        return SCALARS[text]
    if text in objects:
        return objects[text]
    match = _GENERIC.fullmatch(text)
    if not match:
        raise ValueError(text)
    kind, inner = match.group(1).lower(), match.group(2)
    if kind == "list":
        return list[parse_type(inner, objects)]
    if kind == "optional":
        return Optional[parse_type(inner, objects)]
    key, comma, value = inner.partition(",")
    if not comma or key.strip() != "str":
        raise ValueError(text)  # JSON object keys are strings
    return dict[str, parse_type(value, objects)]


def object_types(declared: Mapping[str, Any], problem: Any) -> dict[str, type]:
    """The object types of `types` (and the built-in ones), as pydantic models, by name. An object's
    fields may name types declared before it. `problem(key, what)` collects what is wrong."""
    objects: dict[str, type] = {}
    for name, fields in {**BUILT_IN, **declared}.items():
        key = f"types.{name}"
        if not _NAME.fullmatch(str(name)) or name in SCALARS:
            problem(key, f"not a type name (got {name!r}; expected a name such as SamplingParams)")
            continue
        if not isinstance(fields, Mapping) or not fields:
            problem(key, f"not an object (got {fields!r}; expected its fields and their types)")
            continue
        parsed, ok = {}, True
        for field, declaration in fields.items():
            tp, default = field_declaration(declaration, f"{key}.{field}", objects, problem)
            if tp is None:
                ok = False
                continue
            parsed[field] = (tp, default)
        if ok:
            objects[name] = pydantic.create_model(name, **{f: _pydantic_field(tp, d) for f, (tp, d) in parsed.items()})
    return objects


_REQUIRED = object()


def field_declaration(declared: Any, key: str, objects: Mapping[str, Any], problem: Any) -> tuple[Any, Any]:
    """(type, default or `_REQUIRED`) of a field declared as `TYPE` or `{type: TYPE, default: VALUE}`;
    (None, None) with the problem collected when either is wrong."""
    spec = declared if isinstance(declared, Mapping) else {"type": declared}
    if unknown := [k for k in spec if k not in ("type", "default")]:
        problem(f"{key}.{unknown[0]}", f"unknown key (got {unknown[0]}; expected type, default)")
        return None, None
    try:
        tp = parse_type(spec.get("type"), objects)
    except ValueError:
        problem(key, f"unknown type (got {spec.get('type')!r}; expected {GRAMMAR})")
        return None, None
    if "default" not in spec:
        return tp, _REQUIRED
    try:
        pydantic.TypeAdapter(tp).validate_python(copy.deepcopy(spec["default"]))
    except pydantic.ValidationError as exc:
        problem(f"{key}.default", f"does not fit its type (got {spec['default']!r}; expected {type_name(tp)}: "
                                  f"{exc.errors()[0]['msg'].lower()})")
        return None, None
    return tp, spec["default"]


def required(default: Any) -> bool:
    return default is _REQUIRED


def _pydantic_field(tp: Any, default: Any) -> tuple[Any, Any]:
    if required(default):
        return tp, ...
    return tp, pydantic.Field(default_factory=lambda: copy.deepcopy(default))  # each request its own copy


def model(name: str, fields: Mapping[str, tuple[Any, Any]], *, forbid_extra: bool = False) -> type:
    """A pydantic model of `fields` (name -> (type, default or required))."""
    config = pydantic.ConfigDict(extra="forbid") if forbid_extra else None
    return pydantic.create_model(name, __config__=config,
                                 **{f: _pydantic_field(tp, d) for f, (tp, d) in fields.items()})


def zero(tp: Any) -> Any:
    """What an unfilled output holds: the type's empty value (None for optional, object and any)."""
    origin = getattr(tp, "__origin__", tp)  # list[int] -> list; StrictInt (int, annotated) -> int
    return origin() if origin in (list, dict, str, int, float, bool, bytes) else None


def type_name(tp: Any) -> str:
    """A type as a declaration writes it."""
    for name, scalar in SCALARS.items():
        if tp is scalar:
            return name
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return tp.__name__
    args = getattr(tp, "__args__", ())
    origin = getattr(tp, "__origin__", None)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return f"dict[str, {type_name(args[1])}]"
    if type(None) in args:
        return f"optional[{type_name(next(a for a in args if a is not type(None)))}]"
    return str(tp)


def explain(error: Mapping[str, Any], declared: Mapping[str, Any]) -> str:
    """One pydantic error as the miner words it: where, what was expected, what came."""
    where = ".".join(map(str, error["loc"])) or "body"
    kind = error["type"]
    field = error["loc"][0] if error["loc"] else None
    expected = f"; '{field}' is {type_name(declared[field])}" if field in declared else ""
    if kind == "missing":
        return f"'{where}' is required{expected}"
    if kind == "extra_forbidden":
        return f"'{where}' is not a field of this type"
    what = _WORDS.get(kind.removesuffix("_parsing").removesuffix("_type"), "does not fit its type")
    return f"'{where}': {what}{expected}"


_WORDS = {"int": "should be an integer", "float": "should be a number", "string": "should be text",
          "bool": "should be true or false", "bytes": "should be base64 text", "list": "should be a list",
          "dict": "should be an object", "model": "should be an object", "value_error": "should be base64 text",
          "int_from_float": "should be an integer", "finite_number": "should be a finite number",
          "json": "should be a JSON value"}
