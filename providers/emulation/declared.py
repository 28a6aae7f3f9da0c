"""What config declares about one deployment besides its capability flags, for the
emulations that need more than a flag: a fill-in-the-middle template and a tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from providers.emulation.fim import FimTemplate
from providers.local.tokenizer_cache import DeclaredTokenizer


@dataclass(frozen=True, slots=True)
class Declared:
    """`fim`: the template that emulates `suffix`. `tokenizer`: the model's tokenizer (chat
    template for chat on a completion-only backend; token counts for usage in streams).
    `shares_tokenizer`: whether token ids and `logit_bias` written for the model's primary
    deployment mean the same here (it is the primary, or declares the same tokenizer)."""

    fim: FimTemplate | None = None
    tokenizer: DeclaredTokenizer | None = None
    shares_tokenizer: bool = True


NOTHING_DECLARED = Declared()
