"""Running a study's trials: the worker's loop, one trial, and local worker processes."""
