"""halo-integrator: turn mailboxes into help-desk tickets."""

__version__ = "0.1.0"
