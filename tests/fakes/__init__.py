"""Test doubles shared across test modules: the Kubernetes API emulator, a
Slack webhook receiver, and helpers that put DAGs into a database."""
