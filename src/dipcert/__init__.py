"""dipcert: Deep Inverse Prior reconstructions with convergence and recovery certificates."""

__version__ = "0.1.0"
