"""A request's routing options, however the client spelt them, as one `RouterChoices`.

The `router` object and the top-level `fallbacks` (the spelling other gateways use) both
choose routing; the team's `allow_router_options` check reads only the `RouterChoices`
built here, so a field that chooses routing and is not gathered here cannot be honoured
at all, and one that is cannot escape the check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.config import TurnoutConfig
from policies.policy_config import Strategy
from policies.routing import RouterChoices
from policies.teams import Caller
from policies.translation import Mode
from router.schemas.common import OpenAIRequest

# Every body field that chooses routing. `cache` is Turnout's own too, but chooses none.
ROUTING_FIELDS = frozenset({"router", "fallbacks"})


def routing_choices(parsed: OpenAIRequest) -> RouterChoices:
    options = parsed.router
    fallbacks = [*(parsed.fallbacks or ()), *((options.fallbacks or ()) if options else ())]
    if options is None:
        return RouterChoices(fallbacks=fallbacks)
    return RouterChoices(
        translation=Mode(options.translation) if options.translation else None,
        only=options.only,
        ignore=options.ignore,
        strategy=Strategy(options.strategy) if options.strategy else None,
        fallbacks=fallbacks,
    )


def drops_what_chat_lacks(config: TurnoutConfig, caller: Caller, body: Mapping[str, Any]) -> bool:
    """For a door that maps another API onto chat (Responses, Anthropic's Messages): whether
    what chat cannot express is dropped (translation mode `drop`: the request's, else the
    team's, else the model's) rather than refused."""
    options = body.get("router")
    asked = options.get("translation") if isinstance(options, Mapping) else None
    resolved = config.model_names.resolve(str(body.get("model")))
    route = config.models.get(resolved.configured) if resolved is not None else None
    mode = asked or caller.translation or (route.translation if route is not None else None)
    return str(mode) == "drop"
