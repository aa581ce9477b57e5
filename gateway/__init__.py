"""The public API of seam: pipelines (an encoder output, or another pipeline's probabilities, feeding a
classifier model), every seam of the chain checked before anything is forwarded.

HTTP: ``app`` builds the application, ``routes``/``upgrade_routes`` are thin adapters, ``schemas`` the
public wire models, ``auth`` the API keys. The operations (``runtime``, ``training``, ``upgrade``) use
one room per concern: ``chains`` (a pipeline's checked links), ``catalog`` (version records and check
results), ``routing``/``acceptance``/``encoders`` (which encoder serves a link), ``coalescing`` and
``deadlines`` (concurrent predicts), ``aliases``, ``drift``, one ``cache`` type, ``chunks``. The
upstreams are reached through ``upstreams`` (typed clients) over ``transport`` (the wire).

It imports ``services`` (the shared pure core and HTTP kit), never ``encoder_service`` or
``classifier_service``: what the upstreams send is read with ``services.wire``. Only its entry point,
the tests and ``seam.settings_table`` (which reads ``gateway.settings``) import it.
"""
