"""A request's routing options, however the client spelt them, as one `RouterChoices`.

The `router` object and the top-level `fallbacks` (the spelling other gateways use) both
choose routing; the team's `allow_router_options` check reads only the `RouterChoices`
built here, so a field that chooses routing and is not gathered here cannot be honoured
at all, and one that is cannot escape the check."""

from __future__ import annotations

from policies.policy_config import Strategy
from policies.routing import RouterChoices
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
