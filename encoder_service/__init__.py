"""encoder_service: serves a pre-trained transformer's embeddings, token sequences and probabilities."""
