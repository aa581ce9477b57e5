"""bench: the benchmark (``make bench``): seam's three services against an in-process limit, a naive
app and a peer, run as real processes on 127.0.0.1; figures land in ``bench/results/`` and the README.

What lives here: ``run`` (one sitting, every cell) and ``report`` (the tables), ``loadgen`` (the load
generator), ``inprocess`` / ``naive_app`` / ``peers`` (what seam is compared with), ``hardware`` (the
machine's GEMM limit), ``workload`` (texts, memory readings), ``soak``, ``locustfile``, and the side
studies ``lone_overhead`` and ``encoders_overhead``.

Who may import it: the tests, and nothing that serves: no service, nor ``services`` or ``seam``,
imports it. It may import anything (the services, the client, the tests' tiny models).
"""
