"""Optional integrations (transformers, hub, ...). Each module imports its library lazily."""
