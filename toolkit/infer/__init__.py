"""Inference: exported models loaded as functions, batch prediction over files (`python -m toolkit.infer`), evaluation."""
