"""The paper's pipeline on top of the engine: training runs, experiments, sweeps, report, demo."""
