"""Training runs: recipes, run directories, checkpoints, the one resumable epoch loop."""
