"""`TokenizerAdapter`: the one seam between the local samplers and a transformers tokenizer.

Prompts and chats become token ids here, and token ids become what the OpenAI wire shows
for them in logprobs (`token_text`, `token_bytes`). The tokenizer's family decides how a
token's exact bytes are recovered: byte-level BPE (GPT-2, StarCoder, SmolLM2) maps each
character of the token string back to one byte; SentencePiece with byte fallback writes
`▁` for a space and `<0xE6>` for a raw byte. Template and id errors become 400s here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from providers.local.bad_request import bad_request
from providers.local.recent_encodings import RecentEncodings
from providers.local.text import IncrementalDetokenizer

# Special tokens that end a text or a turn in common vocabularies, besides `eos_token`.
_END_TOKENS = (
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
)
# Fill-in-the-middle special tokens: (prefix, suffix, middle), prefix-suffix-middle order.
_FIM_STYLES = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    # DeepSeek Coder spells its tokens with full-width bars (\uff5c).
    ("<\uff5cfim▁begin\uff5c>", "<\uff5cfim▁hole\uff5c>", "<\uff5cfim▁end\uff5c>"),
    ("<|fim▁begin|>", "<|fim▁hole|>", "<|fim▁end|>"),
)
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: printable stand-in character → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = 0
    table: dict[str, int] = {}
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + extra)] = byte
            extra += 1
    return table


def _decoder_family(tokenizer: Any) -> str:
    """The tokenizer family (byte_level, sentencepiece or other), from its decoder."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return "other"
    spec = bytes(decoder.__getstate__())  # the decoder's JSON definition
    if b'"ByteLevel"' in spec:
        return "byte_level"
    if b'"ByteFallback"' in spec or b'"Metaspace"' in spec:
        return "sentencepiece"
    return "other"


class TokenizerAdapter:
    """Wraps a loaded transformers tokenizer (fast/tokenizers-backed) for the engine."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab_size: int = len(tokenizer)
        self._vocab: dict[str, int] = tokenizer.get_vocab()
        self._added: dict[int, str] = {
            index: str(token.content) for index, token in tokenizer.added_tokens_decoder.items()
        }
        self._family = _decoder_family(tokenizer)
        self._byte_decoder = _byte_decoder() if self._family == "byte_level" else {}
        self._bytes_cache: dict[int, bytes] = {}
        self.eos_ids: frozenset[int] = self._find_eos_ids()
        self.bos_prefix: tuple[int, ...] = self._find_bos_prefix()
        # A prompt rendered twice (affinity routing's probe, then the request) is
        # tokenized once.
        self.recent = RecentEncodings()

    @classmethod
    def load(cls, path: str, gguf_file: str | None = None) -> TokenizerAdapter:
        """Load a tokenizer from a local directory (optionally from a GGUF file in it)."""
        from transformers import AutoTokenizer

        if gguf_file is None:
            return cls(AutoTokenizer.from_pretrained(path))
        return cls(AutoTokenizer.from_pretrained(path, gguf_file=gguf_file))

    def _find_eos_ids(self) -> frozenset[int]:
        ids = {self._vocab[name] for name in _END_TOKENS if name in self._vocab}
        eos = self.tokenizer.eos_token_id
        if isinstance(eos, int):
            ids.add(eos)
        return frozenset(ids & set(self._added))

    def _find_bos_prefix(self) -> tuple[int, ...]:
        # What the tokenizer puts before a text of its own accord (BOS, or nothing); what
        # some put after it (EOS) is never wanted in a prompt that is to be continued.
        plain = self.tokenizer.encode("a", add_special_tokens=False)
        marked = self.tokenizer.encode("a", add_special_tokens=True)
        for start in range(len(marked) - len(plain) + 1):
            if marked[start : start + len(plain)] == plain:
                return tuple(marked[:start])
        return ()

    # Prompts

    def encode_text(self, text: str) -> list[int]:
        """Token ids of `text`, with no special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        """A completions prompt as token ids: text gets the tokenizer's BOS (if any); ids
        are checked against the vocabulary. An empty prompt starts from BOS, if there is one."""
        if isinstance(prompt, str):
            ids = [*self.bos_prefix, *self.recent.encode(prompt, self.encode_text)]
        else:
            ids = self.check_ids(prompt, "prompt")
        if not ids:
            bos = self.tokenizer.bos_token_id
            if not isinstance(bos, int):
                raise bad_request("The prompt must not be empty.", "prompt")
            ids = [bos]
        return ids

    def check_ids(self, ids: Sequence[int], param: str) -> list[int]:
        """`ids` as a list, or a 400 naming `param` if any is outside the vocabulary."""
        for token in ids:
            if not 0 <= token < self.vocab_size:
                raise bad_request(
                    f"Token id {token} is out of range: the vocabulary has "
                    f"{self.vocab_size} tokens.",
                    param,
                )
        return list(ids)

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        *,
        continue_final: bool = False,
    ) -> list[int]:
        """The model's chat template applied to `messages`, ending with the assistant's
        generation prompt (`continue_final`: ending inside the final assistant message,
        left open to be continued). Tools are handed to the template; what it does with
        them is the template's business."""
        # The template writes its own special tokens (BOS included) into the text.
        text = self.chat_text(messages, tools, tool_choice, continue_final=continue_final)
        return self.recent.encode(text, self.encode_text)

    def chat_text(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        *,
        continue_final: bool = False,
    ) -> str:
        """`render_chat` as text: the special tokens written out, as a prompt to send."""
        from jinja2 import TemplateError

        options: dict[str, Any] = {"add_generation_prompt": not continue_final, "tokenize": False}
        if continue_final:
            options["continue_final_message"] = True
        if tools:
            options["tools"] = [dict(tool) for tool in tools]
            options["tool_choice"] = tool_choice
        conversation = [_template_message(message) for message in messages]
        try:
            text = self.tokenizer.apply_chat_template(conversation, **options)
        except (TemplateError, TypeError, ValueError, KeyError) as exc:
            raise bad_request(
                f"The chat template rejected the messages: {exc}", "messages"
            ) from exc
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, not str")
        return text

    # Fill in the middle (`suffix`)

    def fim_tokens(self) -> tuple[int, int, int] | None:
        """The (prefix, suffix, middle) special tokens, if the vocabulary has them."""
        for names in _FIM_STYLES:
            if all(name in self._vocab for name in names):
                prefix, suffix, middle = (self._vocab[name] for name in names)
                return prefix, suffix, middle
        return None

    def fim_prompt(self, prompt: str | Sequence[int], suffix: str) -> list[int]:
        """An insertion prompt (prefix-suffix-middle order): the completion is generated to
        go between `prompt` and `suffix`. A 400 naming `suffix` if the model can't do it."""
        tokens = self.fim_tokens()
        if tokens is None:
            raise bad_request("suffix is not supported by this model.", "suffix")
        fim_prefix, fim_suffix, fim_middle = tokens
        if isinstance(prompt, str):
            before = self.encode_text(prompt)
        else:
            before = self.check_ids(prompt, "prompt")
        return [
            *self.bos_prefix,
            fim_prefix,
            *before,
            fim_suffix,
            *self.encode_text(suffix),
            fim_middle,
        ]

    # Output text

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        text = self.tokenizer.decode(
            list(ids),
            skip_special_tokens=skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )
        if not isinstance(text, str):
            raise TypeError(f"tokenizer.decode returned {type(text).__name__}, not str")
        return text

    def detokenizer(
        self, prefix_ids: Sequence[int] = (), *, skip_special_tokens: bool = True
    ) -> IncrementalDetokenizer:
        """A fresh incremental detokenizer continuing after `prefix_ids`."""
        return IncrementalDetokenizer(
            self.tokenizer, prefix_ids, skip_special_tokens=skip_special_tokens
        )

    def raw_bytes(self, token: int) -> bytes:
        """The exact bytes token `token` stands for (a partial UTF-8 character stays partial)."""
        cached = self._bytes_cache.get(token)
        if cached is None:
            cached = self._compute_bytes(token)
            self._bytes_cache[token] = cached
        return cached

    def _compute_bytes(self, token: int) -> bytes:
        if token in self._added:
            return self._added[token].encode()
        piece = self.tokenizer.convert_ids_to_tokens(token)
        if not isinstance(piece, str):
            return b""
        if self._family == "byte_level" and all(char in self._byte_decoder for char in piece):
            return bytes(self._byte_decoder[char] for char in piece)
        if self._family == "sentencepiece":
            match = _BYTE_PIECE.fullmatch(piece)
            if match is not None:
                return bytes([int(match.group(1), 16)])
            return piece.replace("▁", " ").encode()
        return self.decode([token], skip_special_tokens=False).encode()

    def token_bytes(self, token: int) -> list[int]:
        """The token's bytes as the chat logprobs `bytes` field lists them."""
        return list(self.raw_bytes(token))

    def token_text(self, token: int) -> str:
        """The token as OpenAI shows it in logprobs (" Paris"); a token that is only part of
        a UTF-8 character shows as `bytes:\\xe6\\x97`, as OpenAI's own API does."""
        raw = self.raw_bytes(token)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)


def _template_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI message as chat templates expect it: content as one string (text parts
    joined), `developer` as `system`, no null content."""
    rendered = dict(message)
    if rendered.get("role") == "developer":
        rendered["role"] = "system"
    content = rendered.get("content")
    if content is None:
        rendered["content"] = ""
    elif not isinstance(content, str):
        rendered["content"] = "".join(_text_part(part) for part in content)
    return rendered


def _text_part(part: Any) -> str:
    if isinstance(part, Mapping) and part.get("type") in ("text", "input_text"):
        return str(part.get("text", ""))
    kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
    raise bad_request(
        f"Content parts of type {kind!r} are not supported by this model.", "messages"
    )
