"""Adapter for any OpenAI-compatible HTTP API (OpenAI, vLLM, llama.cpp, Ollama, ...)."""
