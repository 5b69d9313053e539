"""Learning curves recorded from real training (``record.py``) and the search replayed on them."""
