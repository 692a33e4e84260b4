"""The paper's experiments on trained runs, one module per family."""
