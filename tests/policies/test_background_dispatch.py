"""A batch line's trace (`Dispatcher.start_trace(plan, background=True)`): every upstream
call it makes carries `ProviderRequest.background`, the calls an emulation builds (here
n fanned out into single calls) included; a live trace's calls never do."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

import pytest

from policies.config import TurnoutConfig
from policies.dispatch import Dispatcher
from policies.plan import plan_request
from providers.base import Provider
from providers.capabilities import Capabilities
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "n": 2}


class Recording(Provider):
    """A chat deployment without `n` that answers each call at once and keeps them."""

    def __init__(self) -> None:
        super().__init__("a")
        self.requests: list[ProviderRequest] = []

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.CHAT})

    @property
    def capabilities(self) -> Capabilities:
        return replace(super().capabilities, max_n=1)

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        self.requests.append(request)
        message = {"role": "assistant", "content": "ok"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return ProviderResponse({"object": "chat.completion", "choices": [choice]})

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        raise AssertionError("whole answers only")

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("background", [True, False])
async def test_every_call_of_a_background_trace_says_so(background: bool) -> None:
    config = TurnoutConfig.model_validate(
        {
            "providers": {"a": {"kind": "openai", "base_url": "http://x"}},
            "models": {"m": {"deployments": [{"provider": "a", "model": "x"}]}},
        }
    )
    provider = Recording()
    dispatcher = Dispatcher({"a": provider})
    plan = plan_request(config, "m")
    trace = dispatcher.start_trace(plan, background=background)

    response = await dispatcher.complete(plan, Endpoint.CHAT, BODY, trace)

    assert trace.background is background
    assert len(response.body["choices"]) == 2
    assert len(provider.requests) == 2  # n fanned out: the emulation built these
    assert all(request.body.get("n", 1) == 1 for request in provider.requests)
    assert [request.background for request in provider.requests] == [background] * 2
