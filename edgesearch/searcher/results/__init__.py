"""What a study found: the report, its findings, trials exported, the list of studies.

Never imports ``run/`` (a test checks): results are read from the storage, not from running trials.
"""
