"""`manage.py consume_records`: the AMQP intake (records.amqp.IntakeConsumer) until SIGTERM / SIGINT.

`--check-configured` only says (exit status 0/1) whether AMQP_URL is set; scripts/consume-records.sh uses it
so `make run` starts the consumer only when there is a broker to read.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from records.amqp import IntakeConsumer


class Command(BaseCommand):
    help = "Consume records from the AMQP queues bound to portals (needs AMQP_URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check-configured", action="store_true",
                            help="Exit 0 when AMQP_URL is set, 1 otherwise; consume nothing.")
        parser.add_argument("--prefetch", type=int, default=20, help="Unacked messages per queue (default 20).")
        parser.add_argument("--reload-seconds", type=float, default=30.0,
                            help="How often the bound queues are read again from the database (default 30).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check_configured"]:
            if not settings.AMQP_URL:
                raise CommandError("AMQP_URL is not set: the AMQP intake is off", returncode=1)
            return
        if not settings.AMQP_URL:
            raise CommandError("AMQP_URL is not set: nothing to consume (the AMQP intake is off)")
        stopping = threading.Event()

        def stop(signum: int, frame: Any) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write("consuming records from the bound AMQP queues")
        outcome = IntakeConsumer(prefetch=options["prefetch"], reload_seconds=options["reload_seconds"]).run(
            stopping.is_set)
        self.stdout.write(f"stopped: {outcome.accepted} jobs stored, {outcome.duplicates} duplicates, "
                          f"{outcome.dead_lettered} dead-lettered, {outcome.requeued} put back")
