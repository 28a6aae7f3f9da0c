"""Cache-aware routing (`strategy: affinity`): send a conversation where its prompt is
already cached, without piling load on one deployment (README, issue 19)."""
