"""sepo: fine-tune discrete diffusion models toward any reward with policy gradients."""

__version__ = "0.1.0"
