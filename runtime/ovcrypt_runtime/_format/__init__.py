"""The format: FORMAT.md's one definition (spec), the reader and writer around it, the manifest."""
