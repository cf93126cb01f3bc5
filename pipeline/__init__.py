"""The run: configuration, the stage runner and the ``mmqrec`` command line.

It composes every package's config section into one run config, runs the stages in order into
a run directory and skips the stages whose config and inputs have not changed.

Main modules:

* :mod:`~pipeline.config` — the run config, loaded from YAML with ``extends:`` and ``--set``
  overrides;
* :mod:`~pipeline.stages` — the stage table and the runner; :mod:`~pipeline.manifest` —
  ``manifest.json``, which records each stage's config hash, times and artefacts;
* :mod:`~pipeline.variants` — extra systems trained on the main run's data and embeddings;
* :mod:`~pipeline.cli` — the ``mmqrec`` commands (also ``python -m pipeline``).
"""
