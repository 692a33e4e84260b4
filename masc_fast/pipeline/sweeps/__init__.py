"""Sweeps: TOML grids of runs × experiments, resumable, into one tidy results table."""
