"""Where a model's plaintext comes from: files, folders, OpenSSL-recipe pairs, conversion to IR."""
