"""The `accuracy` metric module (the script is accuracy.py; a folder evaluate.load can take by path)."""
