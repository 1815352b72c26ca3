"""The Flower strategy (``feda2v.py``: the hooks) and the aggregation maths it uses; the server
step it delegates to lives in ``feda2v_flwr/server/``."""
