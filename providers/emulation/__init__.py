"""Generic emulations: `Provider` wrappers that add a capability a backend lacks.

Each wrapper takes the inner `Provider` and delegates what it does not emulate; policies
choose which wrappers to stack from a deployment's capabilities, so no adapter carries
emulation code of its own.
"""

from collections.abc import Collection

from providers.base import Provider
from providers.capabilities import Capabilities
from providers.emulation.aggregate import AggregatedResponse
from providers.emulation.fake_stream import SyntheticStream
from providers.emulation.fan_out import FanOutN
from providers.emulation.stop import StopEmulation
from providers.emulation.wrapper import ProviderWrapper

__all__ = [
    "EMULABLE",
    "AggregatedResponse",
    "FanOutN",
    "ProviderWrapper",
    "StopEmulation",
    "SyntheticStream",
    "with_emulations",
]


# The emulations the translation planner may choose, by the OpenAI option they stand in for.
EMULABLE = frozenset({"n", "stop", "stream"})


def with_emulations(
    provider: Provider, emulated: Collection[str], capabilities: Capabilities
) -> Provider:
    """`provider` wrapped for the emulations chosen for one request, outermost first:
    a synthetic stream over fanned-out calls over Turnout-side stop matching."""
    if "stop" in emulated:
        provider = StopEmulation(provider, capabilities.max_stop)
    if "n" in emulated:
        provider = FanOutN(provider)
    if "stream" in emulated:
        provider = SyntheticStream(provider)
    return provider
