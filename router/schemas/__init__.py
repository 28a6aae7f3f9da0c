"""OpenAI request schemas: every documented field with its range; unknown fields kept."""
