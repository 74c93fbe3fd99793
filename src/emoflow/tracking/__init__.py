"""MLflow helpers: where runs go, what they record (params, lineage, metrics, models)."""
