"""wsgipool's benchmarks against its peers: ``make bench`` or ``python -m benchmarks``."""
