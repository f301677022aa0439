"""fpbench: a PyTorch Lightning benchmark for DNN model fingerprinting methods."""

__version__ = "0.1.0"
