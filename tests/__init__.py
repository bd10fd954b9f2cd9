"""The test suite (a regular package, so `tests.conftest` is ours even where a dependency installs a top-level `tests` package: robustbench 1.1.1 does)."""
