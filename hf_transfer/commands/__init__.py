"""One module per ``hf-transfer`` sub-command; each defines ``register(subparsers)``."""
