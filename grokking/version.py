"""The package's version, at the bottom of the layers so that every module can record it."""
__version__ = "0.1.0"
