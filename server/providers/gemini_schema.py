"""JSON Schema → the Schema subset Gemini's `parameters` and `responseSchema` accept.

Gemini takes "a select subset of an OpenAPI 3.0 schema object" (https://ai.google.dev/api/
caching#Schema: `type`, `format`, `title`, `description`, `nullable`, `enum` of strings,
`items`, `minItems`, `maxItems`, `properties`, `required`, `minProperties`,
`maxProperties`, `minLength`, `maxLength`, `pattern`, `minimum`, `maximum`, `default`,
`example`, `anyOf`, `propertyOrdering`) and answers 400 `Unknown name` to anything else.
A tool's JSON Schema is reduced to it:

- rewritten where the subset says the same thing: `$ref` to `$defs`/`definitions`
  inlined; `type: [X, "null"]` and `anyOf: [X, {type: null}]` as X with
  `nullable: true`; several types as `anyOf`; `oneOf` as `anyOf`; a single `allOf`
  merged; `const` (a string) as a one-value `enum`; `examples` as `example`;
  `exclusiveMinimum`/`exclusiveMaximum` (numbers) as `minimum`/`maximum`;
- dropped where nothing about a valid value's shape is lost: annotations (`$schema`, `$id`,
  `$comment`, `readOnly`, `writeOnly`, `deprecated`, `contentMediaType`,
  `contentEncoding`), `additionalProperties: true|false`, `uniqueItems`, `multipleOf`,
  and a `format` Gemini has no name for (it knows `date-time` and `enum` for strings,
  `float`/`double`, `int32`/`int64` for numbers);
- refused, naming the keyword's path, where it cannot be said: `not`, conditionals
  (`if`/`then`/`else`), `patternProperties`, `propertyNames`, `dependentRequired`,
  `dependentSchemas`, `unevaluated*`, tuple `items`/`prefixItems`, `contains`, a typed
  `additionalProperties` (a map), `enum`/`const` values that are not strings, a recursive
  `$ref`, `allOf` of several schemas, an array without `items`, and any keyword unknown.
"""

from __future__ import annotations

from typing import Any, Final

from ai_service.errors import InvalidRequest

_COPIED: Final = frozenset(
    {
        "title", "description", "pattern", "minLength", "maxLength", "minItems", "maxItems",
        "minProperties", "maxProperties", "minimum", "maximum", "default", "example",
        "propertyOrdering", "required", "nullable",
    }
)  # fmt: skip
_DROPPED: Final = frozenset(
    {
        "$schema", "$id", "$comment", "$defs", "definitions", "readOnly", "writeOnly",
        "deprecated", "contentMediaType", "contentEncoding", "uniqueItems", "multipleOf",
    }
)  # fmt: skip
_FORMATS: Final = {
    "STRING": frozenset({"date-time", "enum"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}
_TYPES: Final = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})


class _Reducer:
    def __init__(self, root: dict[str, Any], field: str) -> None:
        self.root = root
        self.field = field
        self.resolving: list[str] = []

    def refuse(self, path: str, why: str) -> InvalidRequest:
        return InvalidRequest(f"{self.field}{path}", f"{why}; Gemini's schemas cannot express it")

    def node(self, schema: Any, path: str) -> dict[str, Any]:
        if not isinstance(schema, dict):
            raise InvalidRequest(f"{self.field}{path}", "is not a JSON Schema object")
        if "$ref" in schema:
            return self.reference(schema, path)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            where = f"{path}.{key}"
            if key in _COPIED:
                out[key] = value
            elif key in _DROPPED:
                continue
            elif key == "type":
                self.type_of(value, where, out)
            elif key == "format":
                out["format"] = value  # checked against the type below
            elif key == "properties":
                if not isinstance(value, dict):
                    raise InvalidRequest(f"{self.field}{where}", "is not an object of schemas")
                out["properties"] = {
                    name: self.node(sub, f"{where}.{name}") for name, sub in value.items()
                }
            elif key == "items":
                if not isinstance(value, dict):
                    raise self.refuse(where, "tuple items (a list of schemas)")
                out["items"] = self.node(value, where)
            elif key in ("anyOf", "oneOf"):
                self.alternatives(value, where, out)
            elif key == "allOf":
                if not isinstance(value, list) or len(value) != 1:
                    raise self.refuse(where, "allOf of several schemas")
                merged = self.node(value[0], f"{where}[0]")
                out.update({k: v for k, v in merged.items() if k not in out})
            elif key in ("enum", "const"):
                values = value if key == "enum" else [value]
                if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                    raise self.refuse(where, f"{key} values that are not strings")
                out["enum"] = values
            elif key == "examples":
                if isinstance(value, list) and value:
                    out.setdefault("example", value[0])
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                    out.setdefault(bound, value)
            elif key == "additionalProperties":
                if not isinstance(value, bool):
                    raise self.refuse(where, "additionalProperties with a schema (a map)")
            else:
                raise self.refuse(where, f"the keyword {key!r}")
        self.check_format(out, path)
        if out.get("type") == "ARRAY" and "items" not in out:
            raise self.refuse(f"{path}.items", "an array without the schema of its items")
        return out

    def type_of(self, value: Any, where: str, out: dict[str, Any]) -> None:
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(n, str) and n.lower() in _TYPES for n in names):
            raise InvalidRequest(f"{self.field}{where}", f"{value!r} is not a JSON Schema type")
        kinds = [n.upper() for n in names if n.lower() != "null"]
        if len(kinds) < len(names) and kinds:
            out["nullable"] = True
        if len(kinds) == 1 or not kinds:
            out["type"] = kinds[0] if kinds else "NULL"
        else:
            out["anyOf"] = [{"type": kind} for kind in kinds]

    def alternatives(self, value: Any, where: str, out: dict[str, Any]) -> None:
        if not isinstance(value, list) or not value:
            raise InvalidRequest(f"{self.field}{where}", "is not a list of schemas")
        options = [self.node(sub, f"{where}[{i}]") for i, sub in enumerate(value)]
        kept = [option for option in options if option != {"type": "NULL"}]
        if len(kept) < len(options):
            out["nullable"] = True
        if len(kept) == 1:
            out.update({k: v for k, v in kept[0].items() if k not in out})
        elif kept:
            out["anyOf"] = kept

    def reference(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        ref = schema["$ref"]
        where = f"{path}.$ref"
        target = self.lookup(ref, where)
        if ref in self.resolving:
            raise self.refuse(where, f"the recursive reference {ref!r}")
        self.resolving.append(ref)
        try:
            out = self.node(target, path)
        finally:
            self.resolving.pop()
        # Beside a $ref, a description or default speaks for the use of it.
        for key in ("description", "default", "title"):
            if key in schema:
                out[key] = schema[key]
        return out

    def lookup(self, ref: Any, where: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise self.refuse(where, f"the reference {ref!r} outside the schema")
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise InvalidRequest(f"{self.field}{where}", f"{ref!r} names nothing in the schema")
            node = node[part]
        return node

    def check_format(self, out: dict[str, Any], path: str) -> None:
        fmt = out.get("format")
        if fmt is None:
            return
        if fmt not in _FORMATS.get(str(out.get("type")), frozenset()):
            del out["format"]  # a format Gemini has no name for says nothing it must keep


def gemini_schema(schema: dict[str, Any], field: str) -> dict[str, Any]:
    """`schema` in Gemini's subset; InvalidRequest naming `field` + the keyword's path when it
    holds what the subset cannot express."""
    return _Reducer(schema, field).node(schema, "")
