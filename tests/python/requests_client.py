"""The Python reference as a client: inside a span, calls a URL with `requests`, traced by
opencensus-ext-requests (which injects `traceparent`), and exports to the test's ingestion
server with opencensus-ext-azure.

usage: requests_client.py INGESTION_PORT URL STORAGE_DIR
"""
import loopback_only  # noqa: F401  (must be first)

import sys
import time

from opencensus.ext.azure.trace_exporter import AzureExporter
from opencensus.trace import config_integration
from opencensus.trace.samplers import ProbabilitySampler
from opencensus.trace.tracer import Tracer

import requests

port, url, storage = int(sys.argv[1]), sys.argv[2], sys.argv[3]
config_integration.trace_integrations(['requests'])
exporter = AzureExporter(
    connection_string=loopback_only.connection_string(port),
    export_interval=0.2,
    storage_path=storage,
)
tracer = Tracer(exporter=exporter, sampler=ProbabilitySampler(1.0))
with tracer.span(name='python-caller'):
    response = requests.get(url)
    print(response.status_code, response.text)
    if response.status_code != 200:
        sys.exit('unexpected status %d' % response.status_code)

# Give the worker an export cycle; the exit hook sends the rest.
time.sleep(1.5)
