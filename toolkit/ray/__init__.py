"""Ray: `python -m toolkit.ray` runs the trainer on N Ray workers through Ray Train (pip install .[ray])."""
