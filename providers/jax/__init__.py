"""The JAX implementation of the in-process sampler's model layer: a Llama-family forward
pass with `jax.jit`-compiled, shape-bucketed prefill and decode steps over slot KV caches
(`JaxRunner`), the sampling pipeline with per-row PRNG keys (`JaxSampler`), and a BERT
encoder for sentence embeddings (`JaxEmbedder`). Everything framework-agnostic
(tokenization, stop strings, detokenization, responses, the engine, embedding inputs) is
`providers.local`'s, shared with `providers.torch`; checkpoints are read through
`providers.torch`'s loaders.

Modules here import jax (and some torch) at top level; nothing outside this package
imports them, so the cost is paid only by a `kind: jax` deployment."""
