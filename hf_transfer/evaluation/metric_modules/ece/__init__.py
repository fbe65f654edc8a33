"""The `ece` metric module (the script is ece.py; a folder evaluate.load can take by path)."""
