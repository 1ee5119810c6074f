"""Data: converting sources into TFRecord shards, reading them back, and the shared preprocessing."""
