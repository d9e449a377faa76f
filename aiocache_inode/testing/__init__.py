"""Test helpers shipped for backend authors: fault injection and model-based state machines."""
