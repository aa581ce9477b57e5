"""``python -m encoder_service``: serve on ``ENCODER_HOST``:``ENCODER_PORT`` (127.0.0.1:8001)."""

import os

# OpenMP threads wait for the next operator by spinning, then sleeping. Spinning without end
# (OMP_WAIT_POLICY=ACTIVE) collapses when other processes share the cores (measured here: a MiniLM
# sentence in 164 ms instead of 17); sleeping at once (PASSIVE) pays a wake-up per operator (19-23 ms
# instead of 14-18). So spin briefly, well under a millisecond, then sleep. Only a lone pass uses
# more than one thread (encoder_service/streams.py). Must be set before torch starts OpenMP.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from encoder_service.settings import EncoderSettings  # noqa: E402  (imports no torch)
from services.http.app import serve  # noqa: E402  (nor this)

# oneDNN keeps a primitive for each input shape it meets, in two caches (ideep's and its own, 1,024
# entries each by default). With packed weights, each entry also holds memory of the order of a
# layer's weights: under the benchmark's varied batches the encoder peaked at 755 MB with the
# defaults, 716 with 64 entries, 700 with 32 and 672 with 16 (625 unpacked), while a lone text took
# 6.7 ms in-process with the defaults and 8.2 with 16 (9.5 unpacked). So 16 for packed float32.
# bfloat16 runs oneDNN kernels, packed or not, a primitive per shape too: unbounded, the
# encoder grew to 766 MB under the benchmark's load; on a short run of that load, +114 MB of anonymous
# memory with the defaults, +55 with 64 entries, +44 with 16, and small caches slow its lone text
# (0.6 ms with 16). So 64 there: the memory bounded, a lone text's few shapes kept.
PACKED_CACHE_ENTRIES = "16"
BFLOAT16_CACHE_ENTRIES = "64"


def library_env(settings: EncoderSettings) -> dict[str, str]:
    """Variables torch's libraries read once, at their first use: set before torch is imported."""
    if settings.backend == "torch" and settings.compute_precision == "bfloat16":
        entries = BFLOAT16_CACHE_ENTRIES
    elif settings.packs_weights:
        entries = PACKED_CACHE_ENTRIES
    else:
        return {}
    return {"LRU_CACHE_CAPACITY": entries, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": entries}


def main() -> None:
    settings = EncoderSettings()
    serve("encoder", settings, "encoder_service.app:create_app", environ=library_env(settings))  # torch, from there on


if __name__ == "__main__":
    main()
