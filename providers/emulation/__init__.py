"""Generic emulations: `Provider` wrappers that add a capability a backend lacks.

Each wrapper takes the inner `Provider` and delegates what it does not emulate; policies
choose which wrappers to stack from a deployment's capabilities and declarations, so no
adapter carries emulation code of its own.
"""

from collections.abc import Collection

from providers.base import Provider
from providers.capabilities import Capabilities
from providers.emulation.aggregate import AggregatedResponse
from providers.emulation.best_of import BestOfEmulation
from providers.emulation.bounded import BoundedCalls
from providers.emulation.chat_via_completions import ChatViaCompletions
from providers.emulation.completions_via_chat import CompletionsViaChat
from providers.emulation.declared import NOTHING_DECLARED, Declared
from providers.emulation.echo import EchoEmulation
from providers.emulation.fake_stream import SyntheticStream
from providers.emulation.fan_out import FanOutN
from providers.emulation.fim import FillInTheMiddle, FimTemplate
from providers.emulation.prompt_logprobs import PromptLogprobsEcho
from providers.emulation.stop import StopEmulation
from providers.emulation.stream_usage import StreamUsage
from providers.emulation.wrapper import ProviderWrapper

__all__ = [
    "DEFAULT_MAX_PARALLEL",
    "EMULABLE",
    "INCLUDE_USAGE",
    "NOTHING_DECLARED",
    "SEVERAL_CALLS",
    "AggregatedResponse",
    "BestOfEmulation",
    "BoundedCalls",
    "ChatViaCompletions",
    "CompletionsViaChat",
    "Declared",
    "EchoEmulation",
    "FanOutN",
    "FillInTheMiddle",
    "FimTemplate",
    "PromptLogprobsEcho",
    "ProviderWrapper",
    "StopEmulation",
    "StreamUsage",
    "SyntheticStream",
    "with_emulations",
]

INCLUDE_USAGE = "stream_options.include_usage"
# Upstream calls one request's emulations may have in flight at once (`emulation:
# {max_parallel: ...}` in the config).
DEFAULT_MAX_PARALLEL = 4
# The emulations that may make several upstream calls for one request (best_of: where the
# backend's own n cannot give every candidate in one call).
SEVERAL_CALLS = frozenset({"n", "best_of", "completions"})

# The emulations the translation planner may choose, by the OpenAI option (or endpoint)
# they stand in for. `suffix`, `chat` and usage counting also need a declaration (a FIM
# template, a tokenizer), which the planner checks.
EMULABLE = frozenset(
    {
        "n",
        "stop",
        "stream",
        "non_streaming",
        "completions",
        "chat",
        "echo",
        "best_of",
        "suffix",
        INCLUDE_USAGE,
    }
)


def with_emulations(
    provider: Provider,
    emulated: Collection[str],
    capabilities: Capabilities,
    declared: Declared = NOTHING_DECLARED,
    *,
    max_parallel: int | None = DEFAULT_MAX_PARALLEL,
) -> Provider:
    """`provider` wrapped for the emulations chosen for one request. Outermost first: a
    synthetic stream; best_of ranking; the endpoint converters (completions as one chat
    per prompt, with echo and the suffix instruction; chat through the chat template) or
    suffix through the FIM template and echo; usage counted in streams; n fanned out;
    stop strings matched by Turnout; whole answers assembled from a stream-only backend;
    and, where several calls are made, at most `max_parallel` of them at a time (None:
    `provider` bounds its calls already, as the dispatcher's per-request bound does)."""
    tokenizer = declared.tokenizer
    if max_parallel is not None and SEVERAL_CALLS & set(emulated):
        provider = BoundedCalls(provider, max_parallel)
    if "non_streaming" in emulated:
        if not capabilities.stream_usage and tokenizer is not None:
            provider = StreamUsage(provider, tokenizer)
        usage = capabilities.stream_usage or tokenizer is not None
        provider = AggregatedResponse(provider, usage=usage)
    if "stop" in emulated:
        provider = StopEmulation(
            provider,
            capabilities.max_stop,
            whitespace_stop=capabilities.whitespace_stop,
            tokenizer=tokenizer,
        )
    if "n" in emulated:
        provider = FanOutN(provider)
    if INCLUDE_USAGE in emulated and tokenizer is not None:
        provider = StreamUsage(provider, tokenizer)
    if "completions" in emulated:
        provider = CompletionsViaChat(provider, fill_suffix="suffix" in emulated)
    else:
        provider = _completions_options(provider, emulated, capabilities, declared)
    if "chat" in emulated and tokenizer is not None:
        provider = ChatViaCompletions(provider, tokenizer)
    if "best_of" in emulated:
        # With n fanned out below, the inner provider takes any n.
        most = None if "n" in emulated else capabilities.max_n
        provider = BestOfEmulation(provider, max_native_n=most)
    if "stream" in emulated:
        provider = SyntheticStream(provider)
    return provider


def _completions_options(
    provider: Provider, emulated: Collection[str], capabilities: Capabilities, declared: Declared
) -> Provider:
    """echo (with logprobs where the backend has prompt logprobs), then suffix through the
    FIM template, which answers echo itself."""
    if "echo" in emulated:
        provider = EchoEmulation(provider)
        if capabilities.prompt_logprobs:
            provider = PromptLogprobsEcho(provider)
    if "suffix" in emulated and declared.fim is not None:
        provider = FillInTheMiddle(provider, declared.fim)
    return provider
