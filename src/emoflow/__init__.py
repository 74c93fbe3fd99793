"""emoflow: video facial-expression recognition from raw lab recordings to a served model."""

__version__ = "0.1.0"
