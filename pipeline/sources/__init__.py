"""Dataset sources: a synthetic multimodal demo with known structure, and MovieLens-100K from the recbole wheel."""
