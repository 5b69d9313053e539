"""Where studies live: storage URLs and their redaction, opening a storage, the storage that waits out
database outages, the artifact folder, and every use of Optuna's private API (``_optuna.py``).

Imports nothing else of the searcher (a test checks).
"""
