# One image for every role; the command picks the role (see docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fer_pipeline fer_pipeline
COPY producers producers
COPY workers workers
COPY consumers consumers
COPY emotion_log emotion_log
COPY analytics analytics
COPY dashboard dashboard
COPY trainer trainer
COPY models models
COPY demo demo
# The dashboard, PostgreSQL logs and reports (plots, Parquet, fast reading) are extras.
RUN pip install --no-cache-dir ".[dashboard,postgres,report]"
ENV FER_CONSUMER__OUT_DIR=/data FER_CONSUMER__DB=/data/emotions.sqlite \
    FER_WORKER__MODEL=/app/models/model.json
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["fer-pipeline"]
