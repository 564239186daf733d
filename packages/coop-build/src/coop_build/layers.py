"""Find, read and merge the four Coopfile layers, and say precisely what is wrong.

Layers, later wins: built-in defaults (the model's) < the global file < the workspace's
``coop.toml`` < CLI overrides. Tables merge recursively, so map tables (``[env]``,
``[packages]``) merge key by key while every other value, lists included, is replaced
whole. While merging we remember which layer supplied each value, so an error is blamed on
the file the user has to edit. Each error is one line: ``FILE: [table].key: problem``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from coop_build.coopfile import KNOWN_MANAGERS, Coopfile
from coop_build.envref import env_reference
from coop_build.errors import CoopfileError
from coop_build.paths import display_path
from coop_build.quickcheck import coopfile_paths, env_warning, inputs_digest
from coop_build.store import EnvRef

logger = logging.getLogger(__name__)

OVERRIDES_LABEL = "command line"

_Loc = tuple[str | int, ...]
LayerKind = Literal["global", "workspace", "overrides"]
_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.DOTALL)
_TOML_TUPLE = re.compile(r"\((?:'[^']*',?\s?)+\)")
_TOML_ITEM = re.compile(r"'([^']*)'")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_SECRET_TABLES = frozenset({"env"})  # values under these never appear in messages


@dataclass(frozen=True)
class Layer:
    """One layer as it went into the merge. Kept because not every layer counts the same:
    the workspace's ``coop.toml`` came with a repository, the global file and the CLI
    overrides are the user's own (``coop_run.trust`` weighs what the first asks for)."""

    kind: LayerKind
    data: Mapping[str, Any]  # as parsed; never changed by the merge
    path: Path | None = None  # the file read (absolute); None for the overrides
    sha256: str | None = None  # hex digest of the file's exact bytes, as parsed


@dataclass(frozen=True)
class LoadedCoopfile:
    """The merged, validated Coopfile plus where it came from and what to warn about."""

    coopfile: Coopfile
    path: Path | None  # the workspace coop.toml (absolute), if one was read
    sources: tuple[Path, ...]  # every file read (absolute), lowest layer first
    warnings: tuple[str, ...]  # one line each, already formatted
    # For the quick up-to-date check (see quickcheck): the digest of the layer files and
    # overrides, the warnings that do not depend on the environment, and the ``$NAME``
    # references whose "not set" warning does.
    inputs: str = ""
    static_warnings: tuple[str, ...] = ()
    env_refs: tuple[EnvRef, ...] = ()
    layers: tuple[Layer, ...] = ()  # every layer merged, lowest first

    def layer(self, kind: LayerKind) -> Layer | None:
        """The layer of that kind, if there was one."""
        return next((layer for layer in self.layers if layer.kind == kind), None)


def load_coopfile(
    path: Path | None = None,
    *,
    workspace: Path | None = None,
    global_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedCoopfile:
    """Read, merge and validate every layer; raise ``CoopfileError`` with one line.

    ``path`` is the workspace file (``-f``; it must exist), else ``workspace/coop.toml``
    (``workspace`` defaults to the current directory) when it exists. ``global_path``
    defaults to ``$XDG_CONFIG_HOME/coop/default.toml``; a missing global file is fine.
    ``overrides`` is a nested dict from CLI flags, e.g. ``{"network": {"mode": "none"}}``.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    where = coopfile_paths(path, workspace=workspace, global_path=global_path, environ=env)
    global_label = display_path(where.global_path, env)
    workspace_label = display_path(where.workspace_path, env)

    layers: list[tuple[str, Mapping[str, Any]]] = []
    kept: list[Layer] = []
    sources: list[Path] = []
    raws: list[tuple[Path, bytes | None]] = []
    files: tuple[tuple[LayerKind, Path, str, bool], ...] = (
        ("global", where.global_path, global_label, False),
        ("workspace", where.workspace_path, workspace_label, where.explicit),
    )
    for kind, file, label, required in files:
        raw, data = _read_layer(file, label, required=required)
        raws.append((file, raw))
        if raw is None or data is None:
            continue
        layers.append((label, data))
        sources.append(Path.cwd() / file)
        kept.append(Layer(kind, data, sources[-1], hashlib.sha256(raw).hexdigest()))
    workspace_data = next((layer.data for layer in kept if layer.kind == "workspace"), None)
    if overrides:
        layers.append((OVERRIDES_LABEL, overrides))
        kept.append(Layer("overrides", overrides))

    merged, provenance = merge_layers(layers)
    try:
        coopfile = Coopfile.model_validate(merged)
    except ValidationError as exc:
        raise _first_error(
            exc, merged, provenance, workspace_label=workspace_label, global_label=global_label
        ) from None
    logger.debug("coopfile loaded from %s", ", ".join(str(s) for s in sources) or "defaults")
    static = tuple(_static_warnings(coopfile, provenance, workspace_label))
    refs = tuple(_env_refs(coopfile, provenance, workspace_label))
    unset = tuple(env_warning(r.source, r.key, r.name) for r in refs if r.name not in env)
    return LoadedCoopfile(
        coopfile=coopfile,
        path=sources[-1] if workspace_data is not None else None,
        sources=tuple(sources),
        warnings=static + unset,
        inputs=inputs_digest(raws, overrides),
        static_warnings=static,
        env_refs=refs,
        layers=tuple(kept),
    )


def expand_env(env: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """``[env]`` as the session sees it: a value exactly ``$NAME`` or ``${NAME}`` is taken
    from ``environ`` (unset: empty string); anything else is literal.

    The result holds secrets: never log it, write it to disk or put it in a message.
    """
    out: dict[str, str] = {}
    for key, value in env.items():
        name = env_reference(value)
        out[key] = value if name is None else environ.get(name, "")
    return out


# --- reading -------------------------------------------------------------------------


def _read_layer(
    path: Path, label: str, *, required: bool
) -> tuple[bytes | None, dict[str, Any] | None]:
    """Read and parse one TOML layer: (its bytes, its data); ``None``s when it does not
    exist and need not."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise CoopfileError(f"{label}: file not found") from None
        return None, None
    except OSError as exc:
        raise CoopfileError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise CoopfileError(f"{label}:{line}:{column}: invalid TOML: not UTF-8 text") from None
    try:
        return raw, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CoopfileError(_toml_error(label, str(exc), text)) from None


def _toml_error(label: str, message: str, text: str) -> str:
    match = _TOML_POSITION.match(message)
    if match is not None:
        problem, line, column = match.group(1), match.group(2), match.group(3)
    else:
        problem = message.removesuffix(" (at end of document)")
        line = str(text.count("\n") + 1)
        column = str(len(text) - (text.rfind("\n") + 1) + 1)
    problem = problem.splitlines()[0] if problem else "syntax error"
    # tomllib names tables as Python tuples: ('a', 'b') -> [a.b]
    problem = _TOML_TUPLE.sub(
        lambda m: "[" + ".".join(_TOML_ITEM.findall(m.group(0))) + "]", problem
    )
    return f"{label}:{line}:{column}: invalid TOML: {problem[:1].lower()}{problem[1:]}"


# --- merging -------------------------------------------------------------------------


def merge_layers(
    layers: list[tuple[str, Mapping[str, Any]]],
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Merge ``(label, data)`` layers, lowest first.

    Returns the merged data and its provenance: for every key path (tables and leaves) the
    label of the last layer that supplied a value there.
    """
    merged: dict[str, Any] = {}
    provenance: dict[tuple[str, ...], str] = {}
    for label, data in layers:
        _merge_into(merged, data, label, provenance, ())
    return merged, provenance


def _merge_into(
    target: dict[str, Any],
    layer: Mapping[str, Any],
    label: str,
    provenance: dict[tuple[str, ...], str],
    prefix: tuple[str, ...],
) -> None:
    for raw_key, value in layer.items():
        key = str(raw_key)
        key_path = (*prefix, key)
        old = target.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            provenance[key_path] = label
            _merge_into(old, value, label, provenance, key_path)
            continue
        for stale in [p for p in provenance if p[: len(key_path)] == key_path]:
            del provenance[stale]
        target[key] = _copy(value, label, provenance, key_path)


def _copy(
    value: Any, label: str, provenance: dict[tuple[str, ...], str], key_path: tuple[str, ...]
) -> Any:
    """A deep copy of ``value`` (layers stay untouched), recording its provenance."""
    provenance[key_path] = label
    if isinstance(value, Mapping):
        return {str(k): _copy(v, label, provenance, (*key_path, str(k))) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_plain(v) for v in value]
    return value


def _copy_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _copy_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_plain(v) for v in value]
    return value


# --- errors --------------------------------------------------------------------------


def _first_error(
    exc: ValidationError,
    merged: Mapping[str, Any],
    provenance: Mapping[tuple[str, ...], str],
    *,
    workspace_label: str,
    global_label: str,
) -> CoopfileError:
    """The most useful error as one line; a missing value only when nothing else is wrong."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] == "missing")
    lines = [
        _error_line(
            e, merged, provenance, workspace_label=workspace_label, global_label=global_label
        )
        for e in errors
    ]
    for line in lines[1:]:
        logger.debug("further coopfile error: %s", line)
    return CoopfileError(lines[0])


def _error_line(
    error: ErrorDetails,
    merged: Mapping[str, Any],
    provenance: Mapping[tuple[str, ...], str],
    *,
    workspace_label: str,
    global_label: str,
) -> str:
    loc: _Loc = tuple(p for p in error["loc"] if p != "[key]")
    kind = error["type"]
    if kind == "missing":
        if loc in (("agent",), ("agent", "command")):
            return (
                f"{workspace_label}: [agent].command: required "
                f"(set it in {workspace_label} or in {global_label})"
            )
        return f"{workspace_label}: {_key_path(loc, merged)}: required"
    source = _source(loc, provenance) or workspace_label
    return f"{source}: {_key_path(loc, merged)}: {_problem(error, loc)}"


def _source(loc: _Loc, provenance: Mapping[tuple[str, ...], str]) -> str | None:
    """The layer that supplied the value at ``loc`` (or its nearest recorded ancestor)."""
    keys = tuple(str(p) for p in loc)
    for end in range(len(keys), 0, -1):
        label = provenance.get(keys[:end])
        if label is not None:
            return label
    return None


def _key_path(loc: _Loc, merged: Mapping[str, Any]) -> str:
    """``[table].key[2]``; a top-level key that is not a table stays bare."""
    if not loc:
        return "(top level)"
    first = str(loc[0])
    is_table = len(loc) > 1 or first in Coopfile.model_fields or isinstance(merged.get(first), dict)
    text = f"[{_toml_key(first)}]" if is_table else _toml_key(first)
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{_toml_key(part)}"
    return text


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _problem(error: ErrorDetails, loc: _Loc) -> str:
    """Pydantic's error as a short human phrase about the value at ``loc``."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    got = f", got {_describe(value, secret=bool(loc) and loc[0] in _SECRET_TABLES)}"
    if kind == "extra_forbidden":
        return _unknown_key(loc, value)
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("int_type", "int_parsing", "int_from_float", "greater_than_equal"):
        bound = ctx.get("ge", _lower_bound(loc))
        return f"must be an integer{'' if bound is None else f' >= {bound}'}{got}"
    if kind == "literal_error":
        return f"must be one of {_choices(loc, ctx)}{got}"
    if kind == "string_pattern_mismatch" and loc and loc[0] == "env":
        return "invalid variable name (letters, digits and _, not starting with a digit)"
    simple = {
        "string_type": "must be a string",
        "bool_type": "must be true or false",
        "list_type": "must be a list of strings",
        "dict_type": "must be a table",
        "model_type": "must be a table",
        "model_attributes_type": "must be a table",
        "string_too_short": "must not be empty",
        "too_short": "must not be empty",
    }
    if kind in simple:
        return simple[kind] + ("" if kind in ("string_too_short", "too_short") else got)
    message = error["msg"]
    return message[:1].lower() + message[1:]


def _unknown_key(loc: _Loc, value: Any) -> str:
    name = str(loc[-1])
    if len(loc) == 1:
        tables = list(Coopfile.model_fields)
        close = difflib.get_close_matches(name, tables, n=1)
        if isinstance(value, Mapping):
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            return f"unknown table{hint}"
        homes = [t for t in tables if name in _fields_of(_model_at((t,)))]
        if homes:
            return f"unknown key (did you mean [{homes[0]}].{name}?)"
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        return f"unknown key{hint}"
    close = difflib.get_close_matches(name, _fields_of(_model_at(loc[:-1])), n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown key{hint}"


def _model_at(loc: _Loc) -> type[BaseModel] | None:
    """The model class validating the table at ``loc``, if that is a model."""
    model: type[BaseModel] = Coopfile
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _fields_of(model: type[BaseModel] | None) -> list[str]:
    return [] if model is None else list(model.model_fields)


def _field_at(loc: _Loc) -> FieldInfo | None:
    """The field declaration for the value at ``loc`` (list indexes skipped)."""
    keys = [p for p in loc if isinstance(p, str)]
    if not keys:
        return None
    model = _model_at(tuple(keys[:-1]))
    return None if model is None else model.model_fields.get(keys[-1])


def _lower_bound(loc: _Loc) -> Any:
    field = _field_at(loc)
    for item in field.metadata if field is not None else ():
        bound = getattr(item, "ge", None)
        if bound is not None:
            return bound
    return None


def _choices(loc: _Loc, ctx: Mapping[str, Any]) -> str:
    field = _field_at(loc)
    options = _literal_options(field.annotation) if field is not None else ()
    if options:
        return ", ".join(json.dumps(o) for o in options)
    return str(ctx.get("expected", "?"))


def _literal_options(hint: Any) -> tuple[Any, ...]:
    """The choices of the ``Literal`` in ``hint`` (also inside ``list[...] | None``)."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):
        found = _literal_options(arg)
        if found:
            return found
    return ()


def _describe(value: Any, *, secret: bool) -> str:
    """A short one-line rendering of a bad value; only its kind when it may be a secret."""
    kind = _kind(value)
    if secret or kind in ("a table", "a list"):
        return kind
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value if len(value) <= 60 else value[:60] + "...", ensure_ascii=False)
        return shown
    if isinstance(value, int | float):
        return repr(value)
    return kind


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return "a date or time" if hasattr(value, "isoformat") else type(value).__name__


# --- warnings ------------------------------------------------------------------------


def _static_warnings(
    coopfile: Coopfile,
    provenance: Mapping[tuple[str, ...], str],
    workspace_label: str,
) -> list[str]:
    out: list[str] = []
    for manager in coopfile.unknown_package_managers():
        source = provenance.get(("packages", manager), workspace_label)
        close = difflib.get_close_matches(manager, KNOWN_MANAGERS, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "known: " + ", ".join(KNOWN_MANAGERS)
        out.append(f"{source}: [packages].{_toml_key(manager)}: unknown package manager ({hint})")
    return out


def _env_refs(
    coopfile: Coopfile,
    provenance: Mapping[tuple[str, ...], str],
    workspace_label: str,
) -> list[EnvRef]:
    refs: list[EnvRef] = []
    for key, value in coopfile.env.items():
        name = env_reference(value)
        if name is not None:
            refs.append(EnvRef(provenance.get(("env", key), workspace_label), key, name))
    return refs
