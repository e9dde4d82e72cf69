"""Pipelines: OpenVINO GenAI builders and the memory folders they read configs from."""
