"""Synthetic data and small trained models for tests and benchmarks (not part of the engine)."""
