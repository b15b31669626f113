"""Benchmark scripts: run each as a module from the repository root, e.g. ``python -m bench.dicom``
(``bench/queue.py`` would otherwise shadow the standard library's ``queue`` for the others)."""
