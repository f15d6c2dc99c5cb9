"""plus-workflow: a reproduction of PLUS (Min et al., IEEE Access 2021)."""

__version__ = "0.1.0"
