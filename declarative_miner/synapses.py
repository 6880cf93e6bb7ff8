"""Request types as the config declares them (the `synapses` group): fields, body hash, who answers.

A synapse is one request type: its name is its route (`POST /<name>`) and its v10 synapse name;
its `inputs` are what a caller fills, its `outputs` what the answer fills. Bodies are checked
against the declared field types by pydantic (strictly: "3" is not an int), so a bad body is a
422 naming the field and the type it should have.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import pydantic

from .errors import ConfigError, ConfigProblem, MalformedBody, PromptFailed
from .imports import build, locate
from .prompting import TerminalInfo
from .schema import SynapseConfig

PROMPT = "prompt"  # `answer: prompt`: the `prompt` group's callable, through `Miner.prompt`
SCALARS = {"str": str, "int": int, "float": float, "bool": bool}
TYPES = "str, int, float, bool, list[T], dict[str, T] or optional[T]"
_GENERIC = re.compile(r"(list|dict|optional)\[(.*)\]", re.IGNORECASE)


def parse_type(text: str) -> Any:
    """The Python type a declared type names: `int`, `list[str]`, `dict[str, list[float]]`,
    `optional[int]`. Raises ValueError for anything else."""
    text = str(text).strip()
    if text in SCALARS:
        return SCALARS[text]
    match = _GENERIC.fullmatch(text)
    if not match:
        raise ValueError(text)
    kind, inner = match.group(1).lower(), match.group(2)
    if kind == "list":
        return list[parse_type(inner)]
    if kind == "optional":
        return Optional[parse_type(inner)]
    key, comma, value = inner.partition(",")
    if not comma or key.strip() != "str":
        raise ValueError(text)  # JSON object keys are strings
    return dict[str, parse_type(value)]


def _zero(tp: Any) -> Any:
    """What an unfilled output holds: the type's empty value (None for optional ones)."""
    origin = getattr(tp, "__origin__", tp)
    return origin() if origin in (list, dict, *SCALARS.values()) else None


@dataclass(frozen=True)
class Synapse:
    """One request type the miner answers.

    Attributes:
        name: its route (`/<name>`) and v10 synapse name.
        request_class: what a request is made as (fields: inputs, outputs and `dendrite`).
        inputs, outputs: field name -> Python type.
        hash_fields: the fields a v10 body hash covers (the synapse's `required_hash_fields`).
        stream: the answer is sent as it is produced (one `str` output).
        answer: the callable answering it; None for `prompt` (`Miner.prompt`).
        answered_by: who answers, as the prompt cache keys it.
    """

    name: str
    request_class: type
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    hash_fields: tuple[str, ...]
    stream: bool
    answer: Optional[Callable]
    answered_by: str
    _inputs_model: Any = dataclasses.field(repr=False, compare=False, default=None)
    _outputs_model: Any = dataclasses.field(repr=False, compare=False, default=None)

    @property
    def route(self) -> str:
        return "/" + self.name

    def parse(self, body: Mapping[str, Any], caller: TerminalInfo) -> Any:
        """A request made from a decoded body, or `MalformedBody` naming the field at fault."""
        try:
            # The validated fields as they stand: every declared type is a builtin, so model_dump's
            # serialising copy would build the same values again.
            values = self._inputs_model.model_validate(dict(body)).__dict__
        except pydantic.ValidationError as exc:
            raise MalformedBody("; ".join(_explain(error, self.inputs) for error in exc.errors())) from None
        request = self.request_class(**values, dendrite=caller)
        if (check := getattr(request, "check", None)) is not None:
            check()  # the class's own rules (Prompting: as many roles as messages)
        return request

    def check_outputs(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """`outputs` as declared (unfilled ones empty), or `PromptFailed` naming the field at fault."""
        try:
            return self._outputs_model.model_validate(dict(outputs)).model_dump()
        except pydantic.ValidationError as exc:
            reasons = "; ".join(_explain(error, self.outputs) for error in exc.errors())
            raise PromptFailed(f"{self.name}'s answer does not fit its outputs: {reasons}") from None

    def inputs_of(self, request: Any) -> dict[str, Any]:
        return {name: getattr(request, name) for name in self.inputs}

    def outputs_of(self, request: Any) -> dict[str, Any]:
        return {name: getattr(request, name) for name in self.outputs}


def _explain(error: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
    where = ".".join(map(str, error["loc"])) or "body"
    declared = inputs.get(error["loc"][0]) if error["loc"] else None
    expected = f"; '{error['loc'][0]}' is {_type_name(declared)}" if declared is not None else ""
    return f"'{where}': {error['msg'].lower()}{expected}"


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) and not getattr(tp, "__args__", None) else str(tp).replace("typing.", "")


def build_synapses(declared: Mapping[str, Any]) -> dict[str, Synapse]:
    """Every declared request type, by name, or `ConfigError` naming each key at fault."""
    synapses, problems = {}, []
    keys = [f.name for f in dataclasses.fields(SynapseConfig)]
    for name, spec in declared.items():
        if unknown := [k for k in spec if k not in keys]:
            problems.append(ConfigProblem(f"synapses.{name}.{unknown[0]}", f"unknown key (got {unknown[0]}; "
                                          f"expected one of {', '.join(keys)})"))
            continue
        try:
            synapses[name] = _build_one(name, SynapseConfig(**spec))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return synapses


def _build_one(name: str, spec: Any) -> Synapse:
    key = f"synapses.{name}"
    problems: list[ConfigProblem] = []

    def problem(at: str, what: str) -> None:
        problems.append(ConfigProblem(f"{key}.{at}", what))

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name == "Synapse":
        raise ConfigError([ConfigProblem(key, f"not a synapse name (got {name!r}; expected a class name such "
                                              "as Dummy, other than Synapse, the ping)")])
    inputs, defaults = {}, {}
    for field, declared in spec.inputs.items():
        declared = declared if isinstance(declared, Mapping) else {"type": declared}
        try:
            inputs[field] = parse_type(declared.get("type"))
        except ValueError:
            problem(f"inputs.{field}", f"unknown type (got {declared.get('type')!r}; expected {TYPES})")
            continue
        if "default" in declared:
            defaults[field] = declared["default"]
    outputs = {}
    for field, declared in spec.outputs.items():
        try:
            outputs[field] = parse_type(declared)
        except ValueError:
            problem(f"outputs.{field}", f"unknown type (got {declared!r}; expected {TYPES})")
    for field in set(inputs) & set(outputs):
        problem(f"outputs.{field}", "is an input too (expected a field the answer fills, not one the caller does)")
    for field in spec.hash_fields:
        if field not in inputs:
            problem("hash_fields", f"names a field that is not an input (got {field}; expected one of "
                                   f"{', '.join(inputs) or 'no inputs'})")
    text = len(outputs) == 1 and next(iter(outputs.values())) is str
    if spec.answer == PROMPT and outputs != {"completion": str}:
        problem("outputs", f"must be {{completion: str}} for answer: prompt, which fills the completion "
                           f"(got {', '.join(outputs) or 'none'})")
    elif spec.stream and not text:
        problem("outputs", f"must be one str field to be streamed (got {', '.join(outputs) or 'none'})")
    answer, answered_by = _answer(spec.answer, key, problem)
    request_class = _request_class(name, spec.request_class, inputs, defaults, outputs, key, problem)
    if problems:
        raise ConfigError(problems)
    fields = {f: (tp, defaults[f]) if f in defaults else (tp, ...) for f, tp in inputs.items()}
    inputs_model = pydantic.create_model(f"{name}Inputs", __config__=pydantic.ConfigDict(strict=True), **fields)
    outputs_model = pydantic.create_model(f"{name}Outputs", __config__=pydantic.ConfigDict(strict=True, extra="forbid"),
                                          **{f: (tp, _zero(tp)) for f, tp in outputs.items()})
    return Synapse(name, request_class, inputs, outputs, tuple(spec.hash_fields), bool(spec.stream), answer,
                   answered_by, inputs_model, outputs_model)


def _answer(answer: Any, key: str, problem: Callable[[str, str], None]) -> tuple[Optional[Callable], str]:
    if answer == PROMPT:
        return None, PROMPT
    if not isinstance(answer, Mapping) or "_target_" not in answer:
        problem("answer", f"not a callable (got {answer!r}; expected prompt, or a mapping with _target_)")
        return None, ""
    kwargs = {k: v for k, v in answer.items() if k != "_target_"}
    try:
        built = build(answer["_target_"], kwargs, f"{key}.answer._target_", called_with=("request",))
    except ConfigError as exc:
        for p in exc.problems:
            problem(p.key.removeprefix(key + "."), p.message)
        return None, ""
    return built, json.dumps(dict(answer), sort_keys=True, default=str)


def _request_class(name: str, path: Optional[str], inputs: Mapping[str, Any], defaults: Mapping[str, Any],
                   outputs: Mapping[str, Any], key: str, problem: Callable[[str, str], None]) -> type:
    if path is None:
        fields = [(f, tp, dataclasses.field(default=defaults.get(f))) for f, tp in inputs.items()]
        fields += [(f, tp, dataclasses.field(default_factory=lambda tp=tp: _zero(tp))) for f, tp in outputs.items()]
        fields.append(("dendrite", TerminalInfo, dataclasses.field(default_factory=TerminalInfo)))
        return dataclasses.make_dataclass(name, fields)
    try:
        cls = locate(path)
    except (ImportError, AttributeError, ValueError) as exc:
        problem("request_class", f"cannot import {path!r} ({exc}; expected an import path to a dataclass)")
        return type(None)
    has = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    if missing := [f for f in [*inputs, *outputs, "dendrite"] if f not in has]:
        problem("request_class", f"{path} lacks declared fields (got no {', '.join(missing)}; expected a "
                                 "dataclass with every input, output and dendrite)")
    return cls
