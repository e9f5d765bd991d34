"""Load generator: simulated customers (:mod:`.model`), their ground truth (:mod:`.truth`) and
the HTTP sender (:mod:`.send`), run by :func:`.run.run_loadgen` (``cdp loadgen``, ``cdp demo``).
"""
