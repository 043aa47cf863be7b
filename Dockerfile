# mailgw-smtp: the SMTP intake (docs/smtp-intake.md), for Azure Container Apps or any container host.
#   docker build -t mailgw-smtp .
#   docker run -p 587:2587 -p 465:2465 -v /path/to/tls:/mnt/tls:ro \
#     -e MAILGW_SMTP_INTAKE_CERT_FILE=/mnt/tls/smtp-certificate -e AzureWebJobsStorage__... mailgw-smtp
# It runs as a non-root user, so it listens on 2587 (STARTTLS) and 2465 (implicit TLS); the host
# or the ingress maps 587 and 465 onto them. Settings come from the environment only.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAILGW_SMTP_INTAKE_PORT=2587 \
    MAILGW_SMTP_INTAKE_TLS_PORT=2465

WORKDIR /app
COPY requirements.txt pyproject.toml README.md ./
RUN pip install --no-compile -r requirements.txt
COPY mailgw ./mailgw
COPY devhost ./devhost
RUN pip install --no-compile --no-deps . \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin mailgw

USER 10001
EXPOSE 2587 2465
ENTRYPOINT ["mailgw-smtp"]
