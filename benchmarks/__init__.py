"""Benchmarks that measure omnibyte side by side; each script runs as a module from the repository
root (`.venv/bin/python -m benchmarks.NAME --help`) and writes its section of a results file."""
