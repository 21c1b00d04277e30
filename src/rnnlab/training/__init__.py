"""One run: `run(cfg)` and what it uses to fit, measure and test a model."""
