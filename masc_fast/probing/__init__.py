"""The probe's internals: fit pass, scoring pass, strategies, stored rows, checkpoints, streaming."""
