"""Backend adapters behind one `Provider` interface; see `providers.base`."""
