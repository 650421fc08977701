"""One small module per DVC stage: ``python -m stages.<name> ARGS`` (see dvc.yaml)."""
