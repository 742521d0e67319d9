"""bobench: the Battle of the Backbones as deployable software."""

__version__ = "0.1.0"
