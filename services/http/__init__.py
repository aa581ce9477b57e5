"""The HTTP kit every service is built with: ``app`` (``build_app``, the one install order, and
``serve``, the entry point), ``web`` (problem+json, the body limit), ``admission`` (what gets in),
``auth`` (credentials and scoped keys), ``bodies`` (the body's JSON depth), ``metrics``,
``requestid`` (request ids and the access log), ``logs``, ``memory`` (returning freed memory to the
system), ``docs`` (offline API docs), ``protocols`` (foreign protocols' error members, OpenAPI
bodies), ``oip`` (the Open Inference Protocol router) and ``asgi`` (what their middleware share).

FastAPI, Starlette and uvicorn live here. Imported by the three services' apps, routes and entry
points (and what runs in their processes: runtimes, the gateway's upstream client); never by the pure
core, :mod:`services`."""
