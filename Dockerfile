# The cbir command line and web app, CPU only (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# torch's CPU wheels: the PyPI default for Linux pulls several GB of CUDA libraries
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu . \
    && useradd --create-home cbir && mkdir -p /app/runs && chown cbir /app/runs
USER cbir
EXPOSE 8000
CMD ["cbir", "--help"]
