# One image, three services: the command picks which (see docker-compose.yml).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1

WORKDIR /app
# torch first, the CPU build: an unpinned or default torch pulls gigabytes of CUDA packages.
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"
COPY pyproject.toml README.md ./
COPY services services
COPY encoder_service encoder_service
COPY classifier_service classifier_service
COPY gateway gateway
COPY seam seam
RUN pip install . && useradd --create-home --uid 10001 seam && mkdir -p /var/lib/seam/models && chown -R seam /var/lib/seam

USER seam
EXPOSE 8000 8001 8002
CMD ["python", "-m", "gateway"]
