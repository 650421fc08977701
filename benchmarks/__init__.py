"""Benchmarks: scripts that print speed figures against a baseline measured in the same run."""
