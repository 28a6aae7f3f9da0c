"""Chat options beyond sampling: reasoning, output modalities, predicted output, web search,
prompt caching, moderation, service tiers and safety identifiers, as OpenAI's API
documents them (types, enums and ranges), so a wrong value is a 400 here rather than
something a backend receives."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from router.schemas.content import Open, TextPart


class _Closed(BaseModel):
    """Objects OpenAI's spec closes (`additionalProperties: false`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Verbosity = Literal["low", "medium", "high"]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast"]
Modalities = list[Literal["text", "audio"]]
PromptCacheRetention = Literal["in_memory", "24h"]
SafetyIdentifier = Annotated[str, Field(max_length=64)]


class PromptCacheOptions(Open):
    ttl: Literal["30m"] | None = None
    mode: Literal["implicit", "explicit"] | None = None


class CustomVoice(_Closed):
    id: str


class AudioOutput(Open):
    """`audio`: the spoken answer's voice (a built-in name, or a custom voice) and format."""

    voice: str | CustomVoice
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class Prediction(Open):
    """Predicted output: content the answer is expected to repeat (a latency optimisation)."""

    type: Literal["content"]
    content: str | Annotated[list[TextPart], Field(min_length=1)]


class ApproximateLocation(Open):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    timezone: str | None = None


class UserLocation(Open):
    type: Literal["approximate"]
    approximate: ApproximateLocation


class WebSearchOptions(Open):
    user_location: UserLocation | None = None
    search_context_size: Literal["low", "medium", "high"] | None = None


class ModerationConfig(Open):
    mode: Literal["score", "block"]


class ModerationPolicy(Open):
    input: ModerationConfig | None = None
    output: ModerationConfig | None = None


class Moderation(Open):
    """Moderation run by the backend on the input and the generated output."""

    model: str
    policy: ModerationPolicy | None = None


class ChatOptions(BaseModel):
    """The chat request's options of this module (mixed into `ChatCompletionRequest`,
    whose configuration it repeats so that the mix keeps it)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=True)

    reasoning_effort: ReasoningEffort | None = None
    verbosity: Verbosity | None = None
    service_tier: ServiceTier | None = None
    modalities: Modalities | None = None
    audio: AudioOutput | None = None
    prediction: Prediction | None = None
    web_search_options: WebSearchOptions | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: PromptCacheRetention | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    safety_identifier: SafetyIdentifier | None = None
    moderation: Moderation | None = None
