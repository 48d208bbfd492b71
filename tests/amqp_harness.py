"""The real RabbitMQ for tests (127.0.0.1:5672, guest/guest; override with TEST_AMQP_URL).

    rabbit = Rabbit(AMQP_TEST_URL)                  # in a fixture; rabbit.close() at teardown
        queue = rabbit.queue("intake")              # a unique, declared, durable queue, deleted at teardown
        rabbit.publish(queue, {"pattern": ...}, message_id="m1")
        message = rabbit.get(queue)                 # waits (bounded) for one message; None when none came

Every queue and exchange a test names through `rabbit` gets a unique suffix and is deleted afterwards, so
tests never see each other's messages (and parallel runs of the suite on one broker do not collide).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from kombu import Connection, Exchange, Queue
from kombu.message import Message

AMQP_TEST_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


class Rabbit:
    def __init__(self, url: str) -> None:
        self.url = url
        self.run_id = uuid.uuid4().hex[:10]
        self.connection = Connection(url, connect_timeout=5, transport_options={"confirm_publish": True})
        self.connection.ensure_connection(max_retries=3)
        self.channel = self.connection.channel()
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def name(self, label: str) -> str:
        """A unique name for a queue or exchange the code under test declares (deleted at teardown)."""
        name = f"test.{label}.{self.run_id}"
        self.queues.append(name)
        return name

    def exchange_name(self, label: str) -> str:
        name = f"test.{label}.{self.run_id}"
        self.exchanges.append(name)
        return name

    def queue(self, label: str) -> str:
        """A unique durable queue, declared now."""
        name = self.name(label)
        Queue(name, durable=True, auto_delete=False).bind(self.channel).declare()
        return name

    def publish(self, queue: str, body: Any, *, message_id: str | None = None,
                headers: dict[str, Any] | None = None, content_type: str = "application/json") -> None:
        """Publish to a queue through the default exchange, persistent, as a sending system would."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        properties: dict[str, Any] = {}
        if message_id:
            properties["message_id"] = message_id
        with self.connection.Producer(self.channel) as producer:
            producer.publish(payload, routing_key=queue, exchange="", delivery_mode=2, content_type=content_type,
                             content_encoding="utf-8", headers=headers or {}, **properties)

    def get(self, queue: str, *, timeout: float = 5.0, ack: bool = True) -> Message | None:
        """One message from the queue, waiting up to `timeout` seconds for something published elsewhere."""
        simple = Queue(queue, no_declare=True).bind(self.channel)
        end = time.monotonic() + timeout
        while True:
            message = simple.get(no_ack=False)
            if message is not None:
                if ack:
                    message.ack()
                return message
            if time.monotonic() >= end:
                return None
            time.sleep(0.05)

    def drain(self, queue: str) -> list[Message]:
        """Everything in the queue now (no waiting)."""
        out = []
        while (message := self.get(queue, timeout=0)) is not None:
            out.append(message)
        return out

    def count(self, queue: str) -> int:
        """Ready messages in the queue (declared passively)."""
        _name, count, _consumers = self.channel.queue_declare(queue=queue, passive=True)
        return int(count)

    def close(self) -> None:
        try:
            channel = self.connection.channel()
            for name in self.queues:
                channel.queue_delete(queue=name)
            for name in self.exchanges:
                Exchange(name).bind(channel).delete()
        finally:
            self.connection.release()
