"""hatch-ovcrypt: encrypt OpenVINO IR models into Python wheels, decrypt them in memory at run time."""

__version__ = "0.1.0"
