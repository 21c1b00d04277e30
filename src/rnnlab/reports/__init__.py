"""What many runs conclude: an experiment's tables, figures and verdicts, a sweep's report."""
