"""Inference engines: llama.cpp contexts over shared models (llama.py) and the contract they follow (base.py)."""
