"""The application layer: Hydra-configured runs of the whole pipeline (``pipeline.run_experiment``), their
config and validation, run folders, reports and the multi-process protocol.

A regular package (not a namespace one) so that tools that walk the package tree (import-linter's
layers contract, tests/test_layers.py) see its modules; it imports nothing.
"""
