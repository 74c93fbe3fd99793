"""MLflow helpers: where runs go, what they record (params, lineage, metrics, models), the
registry store's checks (``store``) and its read side (``registry.fetch``)."""
