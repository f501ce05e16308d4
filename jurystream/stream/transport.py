"""faust's aiokafka transport with a short fetch wait, registered as the ``jurykafka://`` scheme.

faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. Tansu holds a fetch for up to that
long even when records are waiting (measured: p50 end-to-end latency 367 ms at 1500 ms, 4 ms at
100 ms, 3 ms at 20 ms), and on any Kafka a long wait only saves idle polling. The scheme is
registered through faust's own plugin entry point (``faust.transports`` in pyproject.toml).
"""

from __future__ import annotations

from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as driver

from jurystream.config import BrokerSettings

# broker.fetch_max_wait_ms's default, for clients built without settings (measured: BENCHMARKS.md)
FETCH_MAX_WAIT_MS: int = BrokerSettings.model_fields["fetch_max_wait_ms"].default


class LowLatencyConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; no public setter. An app
        # built by worker.create_faust_app carries the setting.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", FETCH_MAX_WAIT_MS)
        return consumer


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer: ClassVar[type[Any]] = Consumer
