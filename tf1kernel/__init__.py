"""tf1kernel: TensorFlow 1.15 notebooks in a container, picked like any local kernel."""

__version__ = "0.1.0"
