"""A study's tables: finished runs → mean ± std over seeds, the papers' values, t-tests.

One module per job, each importing only those above it in this list:

``records``       reading a run directory (``run.yaml``, ``eval.json``, ``train_log.csv``) into a
                  :class:`~robustft.tables.records.RunRecord`; grouping runs by variant
``paper``         the papers' printed values (packaged CSVs in ``paper_values/``) and
                  :class:`~robustft.tables.paper.PaperRef`, the mapping of a study onto them
``significance``  mean ± sample std over seeds and the Welch/Student/paired t-tests (scipy)
``schema``        :class:`~robustft.tables.schema.StudyTables` and the columns of its tables
``per_class``     per-class accuracy (recorded by the evaluation, averaged here) and the
                  warnings about classes a method never predicts
``assemble``      :func:`~robustft.tables.assemble.aggregate_study`: runs → StudyTables
``serialise``     the CSV and strict JSON files of a study, written atomically, read back

Nothing here imports torch at module level (a method's display name is looked up in the
method registry only when a run record is read). This file imports nothing: import from the
submodules, which name what they own.
"""
