"""The application layer: the main job as one object (``job.CoarsePipeline``) that both doors run
(``pipeline.run_experiment`` for ``coarse-gpu``, ``coarse_gpu.api.CoarsePersonalizer`` for Python).

Its modules, by the one concept each group holds (the order in which they may import each other is in
docs/testing.md; import-linter holds it, with no circle):

* the steps (what the job does): ``job`` (the pipeline object), ``loading`` (the data step),
  ``personalize`` and ``model_build`` (step 1), ``methods`` (step 2 and the baselines, a registry),
  ``evaluation`` and ``steps`` (scoring, references, the per-K step), ``kinds`` and ``dose`` (treatment
  kinds, continuous doses), ``estimates`` (re-exports of step 1's output type), ``stages`` (timing);
* the config: ``config`` (the schemas), ``composed`` (the CLI's groups for the API), ``validate`` (the
  torch-free check);
* the runtime: ``rundir`` (run folder, lock, staging), ``interrupt``, ``errors``, ``callbacks``,
  ``tracking`` (W&B), ``report`` (results.json, table.txt, figures), ``pipeline`` (the command's entry);
* the multi-process protocol: ``distributed``, ``link``, ``followers``.

They stay modules of one package rather than four sub-packages because configs and saved runs name them
by path (``coarse_gpu.experiment.callbacks.SweepProgress``, ``coarse_gpu.experiment.tracking.open_tracker``,
the pickled ``coarse_gpu.experiment.config.ModelConfig_<name>`` schemas of a SLURM launch).

A regular package (not a namespace one) so that tools that walk the package tree (import-linter's
layers contract, tests/test_layers.py) see its modules; it imports nothing.
"""
