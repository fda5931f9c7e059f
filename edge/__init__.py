"""ecgret on-device runtime: read, preprocess and image an ECG, encode it with TFLite, search the case index.

This package never imports TensorFlow, PyTorch or sentence-transformers.
"""

__version__ = "0.1.0"
