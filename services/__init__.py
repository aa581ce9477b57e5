"""The vocabulary the three seam services share, pure: tensor contracts (``contracts``), the
compatibility check (``compatibility``), tensor codecs (``codecs``: JSON, the seam frame, the Open
Inference Protocol's tensors), the Open Inference Protocol's data model (``oip``), the error
hierarchy (``errors``), input checks (``inputs``), scores (``scoring``), settings every service has
(``settings``), the wait-for-company rule (``waiting``), the wire between the services (``wire``)
and the tracing spans (``tracing``, OpenTelemetry imported only when on).

No web framework, HTTP client, server or torch, and no I/O: tests/services/test_purity.py checks the
imports. Anything may import it: the services, the gateway, the CLI and client (``seam``), the
benchmark. The HTTP side every service shares is the subpackage :mod:`services.http`."""
