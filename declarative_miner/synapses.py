"""Request types as the config declares them (the `synapses` group): fields, body hash, who answers.

A synapse is one request type: its name is its route (`POST /<name>`) and its v10 synapse name;
its `inputs` are what a caller fills, its `outputs` what the answer fills, each of a type of
field_types.py's grammar. Bodies are checked against the declared types by pydantic, so a bad body is
a 422 naming the field and the type it should have.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import pydantic

from . import field_types
from .errors import ConfigError, ConfigProblem, MalformedBody, PromptFailed
from .imports import build, locate
from .prompting import TerminalInfo
from .schema import SynapseConfig

PROMPT = "prompt"  # `answer: prompt`: the `prompt` group's callable, through `Miner.prompt`


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
        arguments: input field -> the answering callable's keyword argument it is passed as.
        max_body_bytes: its bodies may be at most this; None: the miner's `axon.max_body_bytes`.
    """

    name: str
    request_class: type
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    hash_fields: tuple[str, ...]
    stream: bool
    answer: Optional[Callable]
    answered_by: str
    arguments: Mapping[str, str] = dataclasses.field(default_factory=dict)
    _inputs_model: Any = dataclasses.field(repr=False, compare=False, default=None)
    _outputs_model: Any = dataclasses.field(repr=False, compare=False, default=None)
    _plain: bool = True  # every input of a JSON type its own (no bytes, no objects): values need no conversion
    max_body_bytes: Optional[int] = None

    @property
    def route(self) -> str:
        return "/" + self.name

    def parse(self, body: Mapping[str, Any], caller: TerminalInfo) -> Any:
        """A request made from a decoded body, or `MalformedBody` naming the field at fault."""
        try:
            validated = self._inputs_model.model_validate(dict(body))
        except pydantic.ValidationError as exc:
            raise MalformedBody("; ".join(field_types.explain(error, self.inputs) for error in exc.errors())) from None
        # Objects become dicts (what a callable sees of them); plain fields are already what they are.
        values = validated.__dict__ if self._plain else validated.model_dump()
        request = self.request_class(**values, dendrite=caller)
        if (check := getattr(request, "check", None)) is not None:
            check()  # the class's own rules (Prompting: as many roles as messages)
        return request

    def check_outputs(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """`outputs` as declared (unfilled ones empty), or `PromptFailed` naming the field at fault."""
        try:
            return self._outputs_model.model_validate(dict(outputs)).model_dump()
        except pydantic.ValidationError as exc:
            reasons = "; ".join(field_types.explain(error, self.outputs) for error in exc.errors())
            raise PromptFailed(f"{self.name}'s answer does not fit its outputs: {reasons}") from None

    def inputs_of(self, request: Any) -> dict[str, Any]:
        return {name: getattr(request, name) for name in self.inputs}

    def outputs_of(self, request: Any) -> dict[str, Any]:
        return {name: getattr(request, name) for name in self.outputs}

    def arguments_of(self, request: Any) -> dict[str, Any]:
        """The keyword arguments the answering callable gets from this request (`arguments`)."""
        return {argument: getattr(request, field) for field, argument in self.arguments.items()}


def build_synapses(declared: Mapping[str, Any], types: Mapping[str, Any] = {}) -> dict[str, Synapse]:
    """Every declared request type, by name, with the object types of `types`, or `ConfigError`
    naming each key at fault."""
    problems: list[ConfigProblem] = []

    def problem(key: str, what: str) -> None:
        problems.append(ConfigProblem(key, what))

    objects = field_types.object_types(types, problem)
    synapses, keys = {}, [f.name for f in dataclasses.fields(SynapseConfig)]
    for name, spec in declared.items():
        if unknown := [k for k in spec if k not in keys]:
            problem(f"synapses.{name}.{unknown[0]}", f"unknown key (got {unknown[0]}; expected one of {', '.join(keys)})")
            continue
        built = _build_one(name, SynapseConfig(**spec), objects, problem)
        if built is not None:
            synapses[name] = built
    if problems:
        raise ConfigError(problems)
    return synapses


def _build_one(name: str, spec: Any, objects: Mapping[str, Any], problem: Callable[[str, str], None]) -> Optional[Synapse]:
    key, before = f"synapses.{name}", []
    problem_here = (lambda at, what: (before.append(at), problem(f"{key}.{at}", what)))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name == "Synapse":
        problem(key, f"not a synapse name (got {name!r}; expected a class name such as Dummy, other than Synapse, "
                     "the ping)")
        return None
    inputs = _fields(spec.inputs, f"{key}.inputs", objects, problem, before)
    outputs = _fields(spec.outputs, f"{key}.outputs", objects, problem, before)
    for field in set(inputs) & set(outputs):
        problem_here(f"outputs.{field}", "is an input too (expected a field the answer fills, not one the caller does)")
    for field in spec.hash_fields:
        if field not in inputs:
            problem_here("hash_fields", f"names a field that is not an input (got {field}; expected one of "
                                        f"{', '.join(inputs) or 'no inputs'})")
    if spec.max_body_bytes is not None and not (isinstance(spec.max_body_bytes, int) and spec.max_body_bytes > 0):
        problem_here("max_body_bytes", f"not a size (got {spec.max_body_bytes!r}; expected bytes > 0, or null)")
    for field in spec.arguments:
        if field not in inputs:
            problem_here(f"arguments.{field}", f"not an input (got {field}; expected one of {', '.join(inputs) or 'none'})")
    types = {f: tp for f, (tp, _) in outputs.items()}
    text = len(types) == 1 and next(iter(types.values())) is field_types.SCALARS["str"]
    if spec.answer == PROMPT and set(types) != {"completion"} or spec.answer == PROMPT and not text:
        problem_here("outputs", f"must be {{completion: str}} for answer: prompt, which fills the completion "
                                f"(got {', '.join(types) or 'none'})")
    elif spec.stream and not text:
        problem_here("outputs", f"must be one str field to be streamed (got {', '.join(types) or 'none'})")
    answer, answered_by = _answer(spec.answer, key, lambda at, what: problem_here(at, what), dict(spec.arguments))
    request_class = _request_class(name, spec.request_class, inputs, outputs, key, problem_here)
    if before:
        return None
    plain = all(_plain(tp) for tp, _ in inputs.values())
    return Synapse(name, request_class, {f: tp for f, (tp, _) in inputs.items()}, types, tuple(spec.hash_fields),
                   bool(spec.stream), answer, answered_by, dict(spec.arguments), field_types.model(f"{name}Inputs", inputs),
                   field_types.model(f"{name}Outputs", {f: (tp, field_types.zero(tp)) for f, tp in types.items()},
                                     forbid_extra=True), plain, spec.max_body_bytes)


def _fields(declared: Mapping[str, Any], key: str, objects: Mapping[str, Any], problem: Callable[[str, str], None],
            before: list) -> dict[str, tuple[Any, Any]]:
    fields = {}
    for field, declaration in declared.items():
        tp, default = field_types.field_declaration(declaration, f"{key}.{field}", objects, problem)
        if tp is None:
            before.append(field)
            continue
        fields[field] = (tp, default)
    return fields


def _plain(tp: Any) -> bool:
    """Whether values of `tp` are the same in Python and JSON (no bytes, no object types)."""
    if tp is field_types.SCALARS["bytes"] or isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return False
    return all(_plain(arg) for arg in getattr(tp, "__args__", ()) if arg is not type(None))


def _answer(answer: Any, key: str, problem: Callable[[str, str], None],
            arguments: Mapping[str, str]) -> tuple[Optional[Callable], str]:
    if answer == PROMPT:
        return None, PROMPT  # the prompt's arguments are bound when the prompt is built (build.py)
    if not isinstance(answer, Mapping) or "_target_" not in answer:
        problem("answer", f"not a callable (got {answer!r}; expected prompt, or a mapping with _target_)")
        return None, ""
    kwargs = {k: v for k, v in answer.items() if k != "_target_"}
    try:
        built = build(answer["_target_"], kwargs, f"{key}.answer._target_", called_with=("request",))
        check_arguments(built, arguments, f"{key}.arguments")
    except ConfigError as exc:
        for p in exc.problems:
            problem(p.key.removeprefix(key + "."), p.message)
        return None, ""
    return built, json.dumps(dict(answer), sort_keys=True, default=str)


def check_arguments(answerer: Callable, arguments: Mapping[str, str], key: str) -> None:
    """`ConfigError` at `key` unless `answerer(request, **{argument: ...})` binds for every mapped argument."""
    if not arguments:
        return
    leading: tuple = (None,)  # the request
    if inspect.isclass(answerer):  # checked, not built (mode=validate): its __call__ takes self first
        call, leading = answerer.__call__, (None, None)
    elif inspect.isroutine(answerer) or isinstance(answerer, functools.partial):
        call = answerer
    else:
        call = answerer.__call__
    try:
        signature = inspect.signature(call)
    except (TypeError, ValueError):
        return  # no signature to read: the call itself decides
    try:
        signature.bind(*leading, **dict.fromkeys(arguments.values()))
    except TypeError as exc:
        takes = list(signature.parameters)[len(leading):]
        raise ConfigError([ConfigProblem(key, f"the answer does not take these arguments (got "
                                              f"{', '.join(arguments.values())}; expected some of "
                                              f"{', '.join(takes) or 'none'}: {exc})")]) from None


def _request_class(name: str, path: Optional[str], inputs: Mapping[str, tuple[Any, Any]],
                   outputs: Mapping[str, tuple[Any, Any]], key: str, problem: Callable[[str, str], None]) -> type:
    if path is None:  # each request its own copy of every default
        fields = [(f, tp, dataclasses.field(default_factory=lambda d=d: None if field_types.required(d) else
                                            copy.deepcopy(d))) for f, (tp, d) in inputs.items()]
        fields += [(f, tp, dataclasses.field(default_factory=lambda tp=tp: field_types.zero(tp)))
                   for f, (tp, _) in outputs.items()]
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
