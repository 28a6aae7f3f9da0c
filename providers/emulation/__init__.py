"""Generic emulations: `Provider` wrappers that add a capability a backend lacks.

Each wrapper takes the inner `Provider` and delegates what it does not emulate; policies
choose which wrappers to stack from a deployment's capabilities, so no adapter carries
emulation code of its own.
"""

from collections.abc import Collection

from providers.base import Provider
from providers.capabilities import Capabilities
from providers.emulation.aggregate import AggregatedResponse
from providers.emulation.best_of import BestOfEmulation
from providers.emulation.completions_via_chat import CompletionsViaChat
from providers.emulation.echo import EchoEmulation
from providers.emulation.fake_stream import SyntheticStream
from providers.emulation.fan_out import FanOutN
from providers.emulation.stop import StopEmulation
from providers.emulation.wrapper import ProviderWrapper

__all__ = [
    "EMULABLE",
    "AggregatedResponse",
    "BestOfEmulation",
    "CompletionsViaChat",
    "EchoEmulation",
    "FanOutN",
    "ProviderWrapper",
    "StopEmulation",
    "SyntheticStream",
    "with_emulations",
]


# The emulations the translation planner may choose, by the OpenAI option (or endpoint)
# they stand in for.
EMULABLE = frozenset({"n", "stop", "stream", "completions", "echo", "best_of"})


def with_emulations(
    provider: Provider, emulated: Collection[str], capabilities: Capabilities
) -> Provider:
    """`provider` wrapped for the emulations chosen for one request. Outermost first: a
    synthetic stream; best_of ranking; echo; completions as one chat per prompt (which
    also does echo); n fanned out; stop strings matched by Turnout."""
    if "stop" in emulated:
        provider = StopEmulation(provider, capabilities.max_stop)
    if "n" in emulated:
        provider = FanOutN(provider)
    if "completions" in emulated:
        provider = CompletionsViaChat(provider)
    elif "echo" in emulated:
        provider = EchoEmulation(provider)
    if "best_of" in emulated:
        provider = BestOfEmulation(provider, native_n=capabilities.max_n > 1)
    if "stream" in emulated:
        provider = SyntheticStream(provider)
    return provider
