"""Datasets over processed faces: splits, PyTorch datasets, importers of public datasets."""
