"""Benchmarks of the running platform; scripts run with ``python -m bench.<name>``, never collected as tests."""
