"""Moved to plus.alphabet (models and data both import it). This re-export remains only while
src/plus/data/leakage.py (owned by the convert split) still imports the old path: delete it with that import."""

from plus.alphabet import RESIDUES, decode, encode

__all__ = ["RESIDUES", "decode", "encode"]
