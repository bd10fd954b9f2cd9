"""One small script per Snakemake rule: ``python -m robustft.steps.<name> --help``.

Each reads its inputs and parameters from the command line, calls the library and writes its
outputs atomically, so it can also be run by hand to debug a single job.
"""
