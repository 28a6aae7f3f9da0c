"""The PyTorch implementation of the in-process sampler's model layer: loading packaged or
local models, a Llama-family forward pass over slot KV caches (`TorchRunner`), the sampling
pipeline (`TorchSampler`) and a sentence embedder (`TorchEmbedder`).

Modules here import torch and transformers at top level; nothing outside this package does,
so importing them is the caller's choice of when to pay for it."""
