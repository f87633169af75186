"""JSON parsing and JSON Schema checks at the edge (compiled once per process)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs
import orjson
from flask import Response
from flask.json.provider import JSONProvider
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .errors import BadRequest

MAX_DETAILS = 10
MAX_MESSAGE = 200


@cache
def validator(name: str) -> Draft202012Validator:
    """The compiled validator for `schemas/<name>.schema.json`: the authority, and the messages."""
    text = resources.files(__package__).joinpath(f"schemas/{name}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(_inline_refs(schema, schema.get("$defs", {})))


@cache
def fast_validator(name: str) -> jsonschema_rs.Draft202012Validator:
    """The same schema compiled by jsonschema-rs: only ever used to say "valid" quickly."""
    return jsonschema_rs.Draft202012Validator(validator(name).schema)


def _inline_refs(node: Any, defs: dict, depth: int = 0) -> Any:
    """The schema with each `{"$ref": "#/$defs/x"}` replaced by x itself: the same checks,
    without resolving references on every call (a fifth of the validation time). A reference
    nested more than 8 deep (a recursive definition) is left as it is."""
    if isinstance(node, list):
        return [_inline_refs(item, defs, depth) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/") and depth < 8:
        target = defs.get(ref.removeprefix("#/$defs/"))
        if isinstance(target, dict):
            return _inline_refs(target, defs, depth + 1)
    return {key: _inline_refs(value, defs, depth) for key, value in node.items()}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity. Raises BadRequest naming the problem.

    orjson first (a third of the stdlib's time). What it refuses goes to the stdlib parser,
    which also takes numbers beyond a double (10**400, 1e999): valid JSON that the FHIR readers
    skip leniently rather than refuse the whole call for. Callers check the depth first."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("malformed JSON", ["the body is not UTF-8"]) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest("malformed JSON", ["nested too deeply"]) from None
    except ValueError as exc:
        detail = f"line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else str(exc)
        raise BadRequest("malformed JSON", [detail]) from None


class OrjsonProvider(JSONProvider):
    """Flask's JSON (jsonify, responses) through orjson: compact, keys in insertion order."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=str).decode("utf-8")

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(
            orjson.dumps(obj, default=str), mimetype="application/json"
        )


def _describe(error: ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return f"{where.lstrip('.') or '(root)'}: {message}"


def check(name: str, instance: Any, error: str) -> None:
    """Raise BadRequest(error) listing up to MAX_DETAILS schema violations, deepest first.

    jsonschema-rs answers first (the common case, valid, in about 1 us); anything it refuses
    goes through `jsonschema`, which decides and words the errors. The two implement the same
    draft; tests/test_hot_paths.py holds them to the same verdict on every fixture request and
    response and on generated variants of them."""
    if fast_validator(name).is_valid(instance):
        return
    errors = sorted(
        validator(name).iter_errors(instance),
        key=lambda e: (-len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    if errors:
        raise BadRequest(error, [_describe(e) for e in errors[:MAX_DETAILS]])
