"""Cut the part of OpenAI's OpenAPI description that Turnout's tests use out of the full spec.

Run from the repository root:

    .venv/bin/python tests/openapi/extract.py path/to/openai-openapi.json

It writes ``tests/openapi/openai-subset.json``: a valid OpenAPI 3 document holding the POST
operations of ``/chat/completions``, ``/completions`` and ``/embeddings``, the operations of the
Files, Batch and Responses APIs, the request and response schemas named below, and every
component they reference, transitively.

The spec (2.3.0) describes no schema for a batch's input or output lines (the older
``BatchRequestInput`` / ``BatchRequestOutput`` are gone), so none is cut out here; nor does it
describe the body of ``DELETE /responses/{response_id}`` (its 200 has no content).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Each path with the methods whose operations are kept.
PATHS: dict[str, tuple[str, ...]] = {
    "/chat/completions": ("post",),
    "/completions": ("post",),
    "/embeddings": ("post",),
    "/files": ("get", "post"),
    "/files/{file_id}": ("get", "delete"),
    "/files/{file_id}/content": ("get",),
    "/batches": ("get", "post"),
    "/batches/{batch_id}": ("get",),
    "/batches/{batch_id}/cancel": ("post",),
    "/responses": ("post",),
    "/responses/{response_id}": ("get", "delete"),
    "/responses/{response_id}/input_items": ("get",),
    "/responses/{response_id}/cancel": ("post",),
}
SCHEMAS = (
    "CreateChatCompletionRequest",
    "CreateCompletionRequest",
    "CreateEmbeddingRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "OpenAIFile",
    "ListFilesResponse",
    "DeleteFileResponse",
    "CreateFileRequest",
    "Batch",
    "ListBatchesResponse",
    "CreateBatchRequest",
    "CreateResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
    "ErrorResponse",
)
OUTPUT = Path(__file__).with_name("openai-subset.json")
REF_PREFIX = "#/components/"


def _refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` string anywhere inside ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _operation(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    """The ``method`` operation of ``path``, without the documentation-only ``x-oaiMeta``
    block."""
    operation = dict(spec["paths"][path][method])
    operation.pop("x-oaiMeta", None)
    return operation


def _components(spec: dict[str, Any], roots: list[Any]) -> dict[str, dict[str, Any]]:
    """The components reachable from ``roots``, grouped by section (schemas, responses, ...)."""
    found: dict[str, dict[str, Any]] = {}
    pending = [ref for root in roots for ref in _refs(root)]
    while pending:
        ref = pending.pop()
        if not ref.startswith(REF_PREFIX):
            raise ValueError(f"unsupported $ref {ref!r}")
        section, _, name = ref.removeprefix(REF_PREFIX).partition("/")
        if name in found.get(section, {}):
            continue
        target = spec["components"][section][name]
        found.setdefault(section, {})[name] = target
        pending.extend(_refs(target))
    return {section: dict(sorted(items.items())) for section, items in sorted(found.items())}


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    """The subset document for ``spec``."""
    paths = {
        path: {method: _operation(spec, path, method) for method in methods}
        for path, methods in PATHS.items()
    }
    wanted = [{"$ref": f"{REF_PREFIX}schemas/{name}"} for name in SCHEMAS]
    return {
        "openapi": spec["openapi"],
        "info": {
            key: spec["info"][key] for key in ("title", "version", "license") if key in spec["info"]
        },
        "servers": spec.get("servers", [])[:1],
        "paths": paths,
        "components": _components(spec, [paths, wanted]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="the full openai-openapi.json")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    subset = extract(json.loads(args.spec.read_text(encoding="utf-8")))
    args.output.write_text(
        json.dumps(subset, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
