"""Keys: where the runtime finds them (environment, files, providers) and the key ring."""
