"""classifier_service: named, versioned downstream models fitted on an encoder's output (fixed
vectors, token sequences or probability distributions), persisted safely and served over HTTP."""
