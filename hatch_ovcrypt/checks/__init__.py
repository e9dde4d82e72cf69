"""The checks a build runs before it encrypts anything: project, models, plaintext leaks, dependencies."""
