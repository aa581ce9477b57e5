"""The public API of seam: pipelines (an encoder output, or another pipeline's probabilities, feeding a
classifier model), every seam of the chain checked before anything is forwarded."""
