"""Generators of the docs pages that are made from the code (options, rule registry)."""
