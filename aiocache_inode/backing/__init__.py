"""Backing stores: the protocol and its implementations."""
