"""The vocabulary the three seam services share: contracts, the compatibility check, tensor codecs
and errors. Pure code: no torch, no FastAPI app, no I/O."""
