"""classifier_service: named, versioned downstream models fitted on an encoder's output (fixed
vectors, token sequences or probability distributions), persisted safely and served over HTTP.

What lives here, by room: ``app`` / ``routes`` / ``oip_routes`` / ``alias_routes`` / ``deps`` /
``schemas`` (HTTP, thin); ``runtime`` (the models in memory, kept in line with the store), ``loaded``
(one version: read and checked, predicting), ``fit_request`` (every check before a fit), ``training`` /
``fitting`` (training in worker processes); ``estimators`` (the named estimators) and
``estimator_types`` (how each kind is built, checked and saved), ``heads`` (the torch heads),
``preprocess``, ``calibration``, ``ood``, ``features``, ``retained``; ``store`` (the store protocol and
what both stores share), ``directory_store``, ``object_store`` and ``bucket`` (S3), ``aliases``.

Who may import it: nothing but its own modules and the tests. It imports the pure core
(:mod:`services`); ``services`` never imports it, nor does the gateway, which reaches it over HTTP only.
"""
