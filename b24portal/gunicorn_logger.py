"""gunicorn's access and error logs with secrets redacted (the SMS handler key in every request line).

gunicorn.conf.py (read by gunicorn from the working directory) selects this logger class.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from b24portal.logging import RedactSecretsFilter


class RedactingGunicornLogger(Logger):
    """gunicorn's logger whose handlers (set up again on every reload) carry RedactSecretsFilter."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if not any(isinstance(f, RedactSecretsFilter) for f in handler.filters):
                    handler.addFilter(RedactSecretsFilter())
