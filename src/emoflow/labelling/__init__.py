"""The marking GUI: one trial clip at a time, keys of the thesis (Table 2) → a marks file.

The core (:mod:`.state`, :mod:`.keys`, :mod:`.queue`) has no GUI dependency and is unit-tested;
only :mod:`.window` needs OpenCV's GUI build (see docs/labelling.md).
"""
