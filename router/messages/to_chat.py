"""An Anthropic Messages request → one chat completions request.

Pure: no I/O. The conversation (`system`, `messages[]` and their blocks) is mapped by
router/messages/blocks.py; the options here:

- `model` as it is; `max_tokens` (required) → `max_completion_tokens`; `temperature`,
  `top_p` and `top_k` carried (`top_k` is not OpenAI's, but vLLM and the local samplers
  take it: the pipeline's translation keeps or drops it per deployment);
  `stop_sequences` → `stop`; `metadata.user_id` → `user`; `stream` → `stream` with
  `stream_options.include_usage` (the final `message_delta` needs the output tokens).
- `tools`: custom tools (no `type`, or `custom`) → function tools, `input_schema` as
  `parameters`; server tools (`web_search_…`, `bash_…`, `text_editor_…`, …) run on
  Anthropic's side only: refused naming `tools[i].type`, or dropped. `tool_choice`
  auto/any/tool/none → `auto`/`required`/a named function/`none`;
  `disable_parallel_tool_use` → `parallel_tool_calls: false`. With no tools left,
  neither is sent (chat refuses them without tools).
- `thinking: {type: enabled, budget_tokens}` → `reasoning_effort`: below 4096 tokens
  `low`, below 16384 `medium`, else `high` (Claude Code asks about 4k, 10k and 32k for
  its three levels). `output_config.effort` (the newer form) is passed as it is and
  wins over a budget; `output_config.format` (a JSON schema) → `response_format`.
  `thinking` disabled or adaptive asks nothing of a chat backend.
- Refused, or dropped under `drop`: `mcp_servers`, `container` and
  `context_management`, which only Anthropic's own servers run; a `context_management`
  whose edits only clear thinking blocks is ignored (the chat form has none to clear).
- `cache_control` anywhere (top level, system, blocks, tools) is left out and listed
  once as `cache_control`, in either mode.
- Ignored: `service_tier`, `inference_geo`, `speed` and `diagnostics` (where and how
  fast Anthropic runs a request, nothing a chat backend is asked).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.errors import ApiError
from router.messages.blocks import Drops, chat_messages, system_text

__all__ = ["chat_request", "reasoning_effort"]

# Thinking budgets (tokens) at which the asked reasoning effort goes up a level.
_MEDIUM_BUDGET = 4096
_HIGH_BUDGET = 16384
# Request fields only Anthropic's servers can act on.
_ANTHROPIC_ONLY = ("mcp_servers", "container", "context_management")


def chat_request(
    request: Mapping[str, Any], *, drop: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The chat completions body for an Anthropic Messages `request`, and what was
    dropped (under `drop`; without it those are refused with `ApiError`) or left out
    whatever the mode (`cache_control`)."""
    if not isinstance(request.get("max_tokens"), int):
        raise ApiError("'max_tokens' is required and must be an integer.", param="max_tokens")
    drops = Drops(drop)
    drops.note_cache_control(request)
    for key in _ANTHROPIC_ONLY:
        if request.get(key) is not None and not _asks_nothing_of_chat(key, request[key]):
            drops.unsupported(key, f"'{key}' is not supported by this model.")
    messages = chat_messages(request.get("messages"), drops)
    system = system_text(request.get("system"), drops)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    chat: dict[str, Any] = {
        "model": request.get("model"),
        "messages": messages,
        "max_completion_tokens": request["max_tokens"],
    }
    chat.update(
        {k: request[k] for k in ("temperature", "top_p", "top_k") if request.get(k) is not None}
    )
    if request.get("stop_sequences"):
        chat["stop"] = list(request["stop_sequences"])
    metadata = request.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("user_id") is not None:
        chat["user"] = metadata["user_id"]
    _tool_options(chat, request, drops)
    _output_options(chat, request)
    if request.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, drops.names


def _asks_nothing_of_chat(key: str, value: Any) -> bool:
    """`context_management` whose edits only clear thinking blocks (Claude Code sends
    `clear_thinking_…` on every request): a chat backend is never sent thinking blocks,
    so there is nothing for it to do."""
    if key != "context_management" or not isinstance(value, Mapping):
        return False
    edits = value.get("edits")
    return isinstance(edits, list) and all(
        isinstance(edit, Mapping) and str(edit.get("type", "")).startswith("clear_thinking_")
        for edit in edits
    )


def reasoning_effort(budget_tokens: int) -> str:
    if budget_tokens < _MEDIUM_BUDGET:
        return "low"
    return "medium" if budget_tokens < _HIGH_BUDGET else "high"


def _tool_options(chat: dict[str, Any], request: Mapping[str, Any], drops: Drops) -> None:
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(request.get("tools") or ()):
        if not isinstance(tool, Mapping):
            raise ApiError("A tool must be an object.", param=f"tools[{i}]")
        drops.note_cache_control(tool)
        kind = tool.get("type")
        if kind in (None, "custom"):
            tools.append(_function_tool(tool, i))
        else:
            drops.unsupported(
                f"tools[{i}].type",
                f"Server tools of type '{kind}' are not supported by this model; "
                "only custom tools (name, description, input_schema) are.",
            )
    if not tools:
        return
    chat["tools"] = tools
    choice = request.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, Mapping):
        raise ApiError("'tool_choice' must be an object.", param="tool_choice")
    chat["tool_choice"] = _tool_choice(choice)
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def _function_tool(tool: Mapping[str, Any], i: int) -> dict[str, Any]:
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise ApiError("A tool needs a 'name'.", param=f"tools[{i}].name")
    if not isinstance(tool.get("input_schema"), Mapping):
        raise ApiError("A tool needs an 'input_schema' object.", param=f"tools[{i}].input_schema")
    function: dict[str, Any] = {"name": tool["name"], "parameters": dict(tool["input_schema"])}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Mapping[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise ApiError("A 'tool' tool_choice needs a 'name'.", param="tool_choice.name")
        return {"type": "function", "function": {"name": choice["name"]}}
    raise ApiError(f"Unknown tool_choice type '{kind}'.", param="tool_choice.type")


def _output_options(chat: dict[str, Any], request: Mapping[str, Any]) -> None:
    thinking = request.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int):
            raise ApiError("'budget_tokens' must be an integer.", param="thinking.budget_tokens")
        chat["reasoning_effort"] = reasoning_effort(budget)
    config = request.get("output_config")
    if not isinstance(config, Mapping):
        return
    if config.get("effort") is not None:
        chat["reasoning_effort"] = config["effort"]
    form = config.get("format")
    if isinstance(form, Mapping) and form.get("type") == "json_schema":
        schema = {"name": "output", "schema": form.get("schema")}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif form is not None:
        raise ApiError("Unknown output format.", param="output_config.format.type")
