"""seam: serve a pre-trained encoder and the downstream models fed by its output."""
