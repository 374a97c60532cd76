"""Prometheus metrics of a whole deployment, exported by the dashboard at ``/metrics``.

Every producer, worker and consumer already publishes its counters in its heartbeat, and
the streams carry their own counters (published, trimmed unread, dead letters), so one
exporter reading Redis at scrape time covers processes on any machine, with no port to
open on each of them (the redis_exporter pattern). Per-process counters are labelled with
role and ident; latency histograms are observed from the labels the dashboard reads.
"""

from __future__ import annotations

from fer_pipeline.health import collect
from fer_pipeline.transport import Transport

# Heartbeat counter -> (metric name, help). Counters reset when a process restarts, which
# Prometheus' rate() handles.
PROCESS_COUNTERS = {
    "frames": ("fer_frames_total", "Frames captured by producers."),
    "crops_published": ("fer_crops_published_total", "Face crops published by producers."),
    "crops_dropped": ("fer_crops_dropped_total", "Face crops dropped by producers (backlog over the limit)."),
    "crops_labelled": ("fer_crops_labelled_total", "Face crops labelled by workers."),
    "batches": ("fer_batches_total", "Model calls (batches) by workers."),
    "labels_logged": ("fer_labels_logged_total", "Labels written to the emotion log by loggers."),
    "frames_drawn": ("fer_frames_drawn_total", "Frames annotated by display consumers."),
    "dead_letters": ("fer_process_dead_letters_total", "Messages a process sent to the dead-letter stream."),
    "reconnects": ("fer_reconnects_total", "Redis reconnect attempts."),
    "store_waits": ("fer_store_waits_total", "Times a logger found the emotion log unwritable and kept its labels pending."),
    "redis_data_lost": ("fer_redis_data_lost_total",
                        "Times a process found Redis had lost its data (a restart without persistence)."),
    "realtime_lost_ms": ("fer_realtime_lost_milliseconds_total",
                         "Time paced file sources fell behind their frame rate (producers too slow)."),
}
# Bounds of the latency histograms, seconds: a frame budget is 33 ms, a stall is seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PipelineCollector:
    """A prometheus_client collector that reads the deployment's state at each scrape."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def describe(self):
        """No metrics up front: they are read at each scrape, so registering costs no Redis round trip."""
        return []  # collected lazily: no Redis round trip at registration

    def collect(self):
        """The deployment's metrics now: processes alive, stream lengths, group lag and pending, the
        streams' counters and every live process's heartbeat counters."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = collect(self.transport, rate_interval_s=0)
        up = GaugeMetricFamily("fer_processes_alive", "Processes with a live heartbeat.", labels=["role"])
        for role in sorted({"producer", "worker", "logger", "display", *st.alive}):
            up.add_metric([role], st.alive.get(role, 0))
        yield up
        length = GaugeMetricFamily("fer_stream_length", "Messages in each stream.", labels=["stream"])
        for stream, n in st.streams.items():
            length.add_metric([stream], n)
        yield length
        lag = GaugeMetricFamily("fer_group_lag", "Entries not yet delivered to a consumer group "
                                 "(on crops and labels an entry is a bundle of messages).",
                                labels=["stream", "group"])
        pending = GaugeMetricFamily("fer_group_pending", "Entries delivered to a group and not acknowledged "
                                     "(bundles on crops and labels).",
                                    labels=["stream", "group"])
        for g in st.groups:
            lag.add_metric([g.stream, g.group], g.lag)
            pending.add_metric([g.stream, g.group], g.pending)
        yield lag
        yield pending
        published = CounterMetricFamily("fer_published", "Messages published per stream.", labels=["stream"])
        for stream, n in st.published.items():
            published.add_metric([stream], n)
        yield published
        trimmed = CounterMetricFamily("fer_trimmed_unread", "Messages trimmed by the bound before a group read them, or while pending in one.",
                                      labels=["stream"])
        for stream, n in st.trimmed_unread.items():
            trimmed.add_metric([stream], n)
        yield trimmed
        yield CounterMetricFamily("fer_dead_letters", "Messages in the dead-letter stream, ever.",
                                  value=st.dead_letters)

        families = {k: CounterMetricFamily(name.removesuffix("_total"), help_, labels=["role", "ident"])
                    for k, (name, help_) in PROCESS_COUNTERS.items()}
        batch = GaugeMetricFamily("fer_worker_mean_batch_size", "Crops per model call since the worker started.",
                                  labels=["ident"])
        infer = CounterMetricFamily("fer_worker_inference_seconds", "Time workers spent in the model.",
                                    labels=["ident"])
        for p in st.processes:
            for key, value in p.counters.items():
                if key in families:
                    families[key].add_metric([p.role, p.ident], value)
            if p.role == "worker" and p.counters.get("batches"):
                batch.add_metric([p.ident], p.counters.get("crops_labelled", 0) / p.counters["batches"])
            if p.role == "worker" and "infer_ms" in p.counters:
                infer.add_metric([p.ident], p.counters["infer_ms"] / 1000.0)
        yield from families.values()
        yield batch
        yield infer


def registry_for(transport: Transport):
    """A fresh registry (not the process-global one) with the pipeline collector and the
    label latency histogram; returns (registry, histogram labelled by camera)."""
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(transport))
    latency = Histogram("fer_label_latency_seconds", "Capture to label, per face (seen by the dashboard).",
                        ["camera"], buckets=LATENCY_BUCKETS, registry=registry)
    return registry, latency
