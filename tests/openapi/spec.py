"""The vendored OpenAI OpenAPI subset, and a walk comparing its request schemas with
Turnout's pydantic models: every property the spec documents must be a model field, and
every value an enumerated property may take must be one the model takes."""

from __future__ import annotations

import functools
import json
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from jsonschema import Draft202012Validator
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SUBSET = Path(__file__).with_name("openai-subset.json")
SUBSET_URI = "urn:turnout:openai-subset"
Schema = dict[str, Any]


@functools.cache
def _document() -> str:
    return SUBSET.read_text(encoding="utf-8")


def document() -> Schema:
    """A fresh copy of the subset (callers may change it)."""
    loaded: Schema = json.loads(_document())
    return loaded


def schema(name: str) -> Schema:
    found: Schema = document()["components"]["schemas"][name]
    return found


def validator(name: str) -> Draft202012Validator:
    """A validator of answers against the subset's schema `name` (JSON Schema 2020-12, as
    OpenAPI 3.1 uses), its `$ref`s resolved within the subset."""
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SUBSET_URI, resource)
    ref = {"$ref": f"{SUBSET_URI}#/components/schemas/{name}"}
    return Draft202012Validator(ref, registry=registry)


class SpecWalk:
    """Walks a spec schema alongside the models that validate the same place of a body."""

    def __init__(self, spec: Schema) -> None:
        self._schemas: dict[str, Schema] = spec["components"]["schemas"]
        self._seen: set[tuple[int, tuple[type[BaseModel], ...]]] = set()
        self.missing: list[str] = []

    def check(self, node: Schema, models: list[type[BaseModel]], where: str) -> None:
        for variant in self._variants(node):
            if "items" in variant:
                self.check(variant["items"], models, f"{where}[]")
            properties = self._properties(variant)
            key = (id(variant), tuple(models))
            if not properties or key in self._seen:
                continue
            self._seen.add(key)
            chosen = _matching(models, properties, self._resolve)
            if not chosen:
                self.missing.append(f"{where} (no model for an object with {sorted(properties)})")
                continue
            for name, prop in properties.items():
                fields = [_field(model, name) for model in chosen]
                annotations = [f for f in fields if f is not None]
                if not annotations:
                    self.missing.append(f"{where}.{name}")
                    continue
                self._check_values(prop, annotations, f"{where}.{name}")
                inner = [m for a in annotations for m in models_in(a)]
                self.check(prop, list(dict.fromkeys(inner)), f"{where}.{name}")

    def _check_values(self, node: Schema, annotations: list[Any], where: str) -> None:
        enum = self._enum(node)
        allowed = {value for annotation in annotations for value in _literals(annotation)}
        if enum and allowed and not enum <= allowed:
            self.missing.append(f"{where} (values {sorted(map(str, enum - allowed))})")

    def _enum(self, node: Schema) -> set[Any] | None:
        """The values a property may take when the spec enumerates them all (in arrays
        too); None when some alternative is free (any string, an object, ...)."""
        values: set[Any] = set()
        for variant in self._variants(node):
            if "enum" in variant:
                values.update(variant["enum"])
                continue
            inner = self._enum(variant["items"]) if "items" in variant else None
            if inner is None:
                return None
            values.update(inner)
        return values

    def _resolve(self, node: Schema) -> Schema:
        while "$ref" in node:
            node = self._schemas[node["$ref"].rsplit("/", 1)[-1]]
        return node

    def _variants(self, node: Schema) -> list[Schema]:
        """The alternatives a value may take (anyOf/oneOf flattened), without `null`."""
        node = self._resolve(node)
        options = node.get("anyOf") or node.get("oneOf")
        if options:
            return [v for option in options for v in self._variants(option)]
        return [] if node.get("type") == "null" else [node]

    def _properties(self, node: Schema) -> dict[str, Schema]:
        merged: dict[str, Schema] = {}
        for part in node.get("allOf", ()):
            for variant in self._variants(part):
                merged.update(self._properties(variant))
        merged.update(node.get("properties") or {})
        return merged


def _field(model: type[BaseModel], name: str) -> Any:
    for field_name, info in model.model_fields.items():
        if name in (field_name, info.alias):
            return info.annotation
    return None


def _matching(
    models: list[type[BaseModel]], properties: dict[str, Schema], resolve: Any
) -> list[type[BaseModel]]:
    """The models for one variant of a union: those whose discriminator (`type`, `role`)
    takes the variant's one allowed value; all of them when the variant has none."""
    for key in ("type", "role"):
        enum = resolve(properties[key]).get("enum") if key in properties else None
        if enum and len(enum) == 1:
            return [m for m in models if enum[0] in _literals(_field(m, key))]
    return models


def _literals(annotation: Any) -> set[Any]:
    if get_origin(annotation) is Literal:
        return set(get_args(annotation))
    return {value for arg in get_args(annotation) for value in _literals(arg)}


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation can hold: through unions, lists and dict values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return models_in(args[0])
    if origin is dict:
        return models_in(args[1])
    if origin in (list, tuple, Union, types.UnionType):
        return [m for arg in args for m in models_in(arg)]
    return []
