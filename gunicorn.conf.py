"""gunicorn settings, read from the working directory (the image's /app) by `gunicorn` itself."""

# Access and error lines with secrets redacted: the SMS handler key is in every handler request line.
logger_class = "b24portal.gunicorn_logger.RedactingGunicornLogger"
