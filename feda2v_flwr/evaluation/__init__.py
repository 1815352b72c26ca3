"""Measurements for experiments: heads computed from what the clients upload (``closed_form``)."""
