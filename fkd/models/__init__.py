"""The models, one folder each. A folder's ``__init__.py`` is its contract with the pipeline: ``Params`` (its
params.yaml section, declared in ``params.py``), ``SUFFIX``, ``build``, ``fit`` and ``load`` (see
:mod:`fkd.models.registry`, where each is registered in one line); the rest of the folder is the model's own."""
