"""Datasets. ``images`` and ``audio`` are torch-free (numpy/Pillow/wave) so the device side can use them."""
