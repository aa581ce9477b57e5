"""seam: serve a pre-trained encoder and the downstream models fed by its output. This package is the
user's side: the Python client and the ``seam`` command.

What lives here: ``client`` (``Gateway`` and ``AsyncGateway``: every call written once, two transports),
``problems`` (its exceptions) and ``results`` (its typed answers), ``upload`` (a CSV streamed in chunks);
the command: ``cli`` (the parser), ``console`` (what every command shares), ``pipelines`` (train,
predict, check, encoders, evaluate), ``upgrade`` (refit, migrate, compare, promote, aliases), ``demo``
(``seam up``, over ``stack``: the three services as local processes), ``evaluate`` and ``settings_table``.

Who may import it: users, the tests and the benchmark. It reaches the services over HTTP only and
imports none of them, only the pure core's wire shapes (:mod:`services`); no service imports it.
"""
