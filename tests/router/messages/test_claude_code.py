"""Claude Code itself against Turnout's Anthropic-shaped door.

The end-to-end test runs the real CLI (the npm package `@anthropic-ai/claude-code`,
installed into .tools/claude-code by scripts/ensure-claude-code.sh, which `make test` runs)
once, non-interactively (`claude -p`), with `ANTHROPIC_BASE_URL` pointing at a real Turnout
in front of an OpenAI-compatible fake: the translated path, Claude's model name taken by a
`match:` pattern. Its own switches keep it off every other host, and `HOME` is a temporary
directory, so no user configuration is read or written. Skipped, saying why, where node,
npm or the installed CLI are missing.

The pure tests read one request as Claude Code 2.1.332 sent it (recorded/, descriptions
shortened): what it asks that a chat backend must take (a `system` turn inside `messages`,
`context_management` that only clears thinking) is mapped in the default strict mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from policies.errors import ApiError
from router.messages.to_chat import chat_request
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

ROOT = Path(__file__).resolve().parents[3]
CLAUDE = ROOT / ".tools" / "claude-code" / "node_modules" / ".bin" / "claude"
RECORDED = Path(__file__).parent / "recorded" / "claude_code_request.json"
KEY, ADMIN = "sk-claude-code", "sk-admin"
# Claude Code answers in well under a second here; the limit is for a wedged CLI.
CLI_TIMEOUT = 120


def recorded_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(RECORDED.read_text())["body"]
    return body


def claude_code() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node or npm is not on PATH: Claude Code (an npm package) cannot run here")
    if not os.access(CLAUDE, os.X_OK):
        pytest.skip(
            f"Claude Code is not installed at {CLAUDE.relative_to(ROOT)}: "
            "run `sh scripts/ensure-claude-code.sh` (`make test` does)"
        )
    return CLAUDE


def cli_env(url: str, home: Path) -> dict[str, str]:
    """Nothing from the caller's environment but PATH: no ANTHROPIC_* of the user's."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def messages_requests(url: str) -> dict[str, float]:
    """turnout_requests_total samples of the Anthropic door, by (configured) model and
    status."""
    text = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
    return {
        f"{sample.labels['model']} {sample.labels['status']}": sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "turnout_requests_total" and sample.labels.get("endpoint") == "messages"
    }


def test_claude_code_says_hello_through_the_translated_path(tmp_path: Path) -> None:
    claude = claude_code()
    models = {
        "local": {
            "match": ["claude-*"],
            "deployments": [{"provider": "chat", "model": "chat-model"}],
        }
    }
    keys = [{"key": KEY}, {"key": ADMIN, "admin": True}]
    with FakeOpenAIUpstream() as upstream:
        server = RunningTurnout(
            simple_config({"chat": upstream.base_url}, models, keys=keys)
        ).start()
        try:
            done = subprocess.run(
                [str(claude), "-p", "Say hello"],
                env=cli_env(server.url, tmp_path),
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
                check=False,
            )
            seen = messages_requests(server.url)
        finally:
            server.stop()
        chats = [r for r in upstream.requests if r.path == "/v1/chat/completions"]

    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    # The fake answers "echo: " and the last user message, which ends with the prompt.
    assert "echo: " in done.stdout
    assert "Say hello" in done.stdout
    # Every POST /v1/messages it sent was answered, under the entry its `match:` took.
    assert set(seen) == {"local 200"}, seen
    assert chats, "no chat completion reached the upstream"
    asked = chats[0].json
    assert asked["model"] == "chat-model"
    assert asked["stream"] is True
    assert len(asked["tools"]) >= 5  # Claude Code's own tools, as function tools
    assert asked["messages"][0]["role"] == "system"


def test_claude_codes_request_is_taken_in_strict_mode() -> None:
    body = recorded_body()
    chat, dropped = chat_request(body)
    assert dropped == ["cache_control"]
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["system", "user", "system"]
    # The billing header block (a per-request hash) is left out of the system prompt.
    assert "x-anthropic-billing-header" not in chat["messages"][0]["content"]
    assert chat["messages"][2]["content"].startswith("# Environment")
    assert len(chat["tools"]) == len(body["tools"])
    assert chat["reasoning_effort"] == "medium"  # output_config.effort
    assert chat["stream"] is True
    assert chat["max_completion_tokens"] == body["max_tokens"]


def test_context_management_beyond_thinking_is_still_refused() -> None:
    body = recorded_body()
    body["context_management"] = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    with pytest.raises(ApiError) as refused:
        chat_request(body)
    assert refused.value.param == "context_management"
    _, dropped = chat_request(body, drop=True)
    assert "context_management" in dropped


def test_a_system_turn_takes_text_blocks_only() -> None:
    body = recorded_body()
    body["messages"].append(
        {"role": "system", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]}
    )
    with pytest.raises(ApiError) as refused:
        chat_request(body)
    assert refused.value.param == "messages[2].content[0].type"
    body["messages"][-1] = {"role": "system", "content": "Be brief."}
    chat, _ = chat_request(body)
    assert chat["messages"][-1] == {"role": "system", "content": "Be brief."}
