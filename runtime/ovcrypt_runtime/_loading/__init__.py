"""Loading: a package's files and keys, buffers OpenVINO owns, the Runtime, the compiled-model cache."""
