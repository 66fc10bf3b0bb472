"""Sends a few spans through the Python reference exporter (opencensus-ext-azure) to the test's
ingestion server, so that the test can compare its envelopes with census's, kind by kind.

usage: reference_spans.py PORT STORAGE_DIR

Only loopback is reachable from here: any other connection or name lookup is refused, and the
exporter's own usage telemetry (statsbeat) is off.
"""
import loopback_only  # noqa: F401  (must be first: only loopback is reachable)
import sys  # noqa: E402
import time  # noqa: E402

from opencensus.ext.azure.trace_exporter import AzureExporter  # noqa: E402
from opencensus.trace.samplers import ProbabilitySampler  # noqa: E402
from opencensus.trace.span import SpanKind  # noqa: E402
from opencensus.trace.tracer import Tracer  # noqa: E402

port, storage = int(sys.argv[1]), sys.argv[2]
exporter = AzureExporter(
    connection_string='InstrumentationKey=00000000-0000-0000-0000-000000000001;'
    'IngestionEndpoint=http://127.0.0.1:%d/' % port,
    export_interval=0.2,
    storage_path=storage,
)


def tracer():
    return Tracer(exporter=exporter, sampler=ProbabilitySampler(1.0))


# In-process spans, nested, one with a property.
t = tracer()
with t.span(name='inproc-parent'):
    with t.span(name='inproc-child') as span:
        span.add_attribute('order.id', '7')

# A dependency of a user kind.
t = tracer()
with t.span(name='load-order') as span:
    span.span_kind = SpanKind.CLIENT
    span.add_attribute('component', 'SQL')

# An HTTP call (where the reference writes a dependency's target and data).
t = tracer()
with t.span(name='call-pricing') as span:
    span.span_kind = SpanKind.CLIENT
    span.add_attribute('component', 'HTTP')
    span.add_attribute('http.method', 'GET')
    span.add_attribute('http.url', 'http://127.0.0.1:8081/prices/7')
    span.add_attribute('http.status_code', 200)

# A server request that fails with an exception, and a span under it.
t = tracer()
with t.span(name='GET /orders/7') as span:
    span.span_kind = SpanKind.SERVER
    span.add_attribute('http.method', 'GET')
    span.add_attribute('http.route', '/orders/{id}')
    span.add_attribute('http.url', 'http://127.0.0.1:8080/orders/7')
    span.add_attribute('http.status_code', 500)
    span.add_attribute('error.name', 'ValueError')
    span.add_attribute('error.message', 'handler failed')
    span.add_attribute('stacktrace', '  File "app.py", line 7, in handler\n')
    with t.span(name='inproc-under-request'):
        pass

# Give the worker an export cycle; the exit hook sends the rest.
time.sleep(1.5)
