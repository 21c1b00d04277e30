"""What runs leave in MLflow: tag and artifact names, opening and reading runs,
stored models, liveness, figures."""
