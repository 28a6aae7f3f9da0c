"""Framework-agnostic parts of the in-process samplers (PyTorch now, JAX later):
request parameters, tokenization, detokenization, stop matching, response building and the
continuous-batching engine. Nothing here imports torch or jax."""
