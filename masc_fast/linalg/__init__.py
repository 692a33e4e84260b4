"""Eigensolvers for class Grams: exact, partial and batched, around one subspace-iteration core."""
