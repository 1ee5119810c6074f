"""Training: `python -m toolkit.train` (__main__), one run from a Config (run: setup, fit, finish), and its parts."""
