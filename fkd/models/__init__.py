"""The model families, one folder each: ``params.py`` (its params.yaml section), ``network.py`` (the
network and how a saved model is loaded into a model function) and ``train.py`` (how it is trained).
They are registered once, in :mod:`fkd.models.registry`."""
