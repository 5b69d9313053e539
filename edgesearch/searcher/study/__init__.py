"""What a study is: its file (``StudyConfig``) and search space, its sampler and pruner, creating and
loading it, the confirmation companion, its run folders and where its trials stand."""
