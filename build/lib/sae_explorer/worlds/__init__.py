"""Built-in worlds: small generated corpora with known ground truth, and models trained on them."""
