"""encoder_service: serves a pre-trained transformer's embeddings, token sequences and probabilities.

What lives here: ``app`` / ``routes`` / ``oip_routes`` / ``openai_routes`` / ``schemas`` (HTTP, thin);
``runtime`` (the loaded model and its forward passes, never on the event loop), ``loading`` (which model,
vetted before it loads), ``tokenizing``, ``batching`` (the one queue), ``streams`` (the compute threads),
``precision`` / ``prepack`` / ``attention`` / ``onnx_backend`` (how it computes), ``metrics`` and ``traces``.

Who may import it: nothing but its own modules, the tests and the benchmark. It imports the pure core
(:mod:`services`); ``services`` never imports it, nor does the gateway, which reaches it over HTTP only.
"""
