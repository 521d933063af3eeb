"""Torch-free core shared by training, export and the service: tokenization, decoding, metrics, lexicons."""
