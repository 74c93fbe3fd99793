"""The emotion service's parts: settings, the request guard, metrics, uploads, the model source.

``service.py`` beside this package composes them into the two BentoML services; everything that
decides (what a request may be, which model is served) lives here, the model work in
``emoflow.inference``.
"""
