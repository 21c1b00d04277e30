"""What runs leave in MLflow: tag and artifact names, opening runs and reading them back,
the gradient probe's curves, stored models, liveness, figures."""
