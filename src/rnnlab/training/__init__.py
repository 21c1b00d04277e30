"""One run: `run(cfg)`, what it uses to fit, measure and test a model, and the commands that
retrain (`reproduce`) or rescore (`evaluate`) a stored one."""
