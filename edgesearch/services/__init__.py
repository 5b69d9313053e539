"""Servers beside the search: the connection pooler and the dashboard, with the Host check they share.

Of the searcher they import only ``searcher.storage`` (a test checks).
"""
