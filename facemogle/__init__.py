"""facemogle: controllable face generation with a mixture of global and local experts (Face-MoGLE)."""

__version__ = "0.1.0"
