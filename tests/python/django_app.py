"""A one-file Django app traced by the reference OpencensusMiddleware (opencensus-ext-django),
exporting with opencensus-ext-azure to the test's ingestion server.

usage: CENSUS_INGESTION_PORT=... CENSUS_STORAGE=... [CENSUS_SAMPLING_RATE=1.0] \
       django_app.py runserver 127.0.0.1:PORT --noreload

CENSUS_SAMPLING_RATE is the ProbabilitySampler's rate (all traces when unset).
"""
import loopback_only  # noqa: F401  (must be first)

import os
import sys

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

exporter = (
    'opencensus.ext.azure.trace_exporter.AzureExporter('
    'connection_string=%r, export_interval=0.2, storage_path=%r)'
    % (loopback_only.connection_string(int(os.environ['CENSUS_INGESTION_PORT'])),
       os.environ['CENSUS_STORAGE']))

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=['*'],
    ROOT_URLCONF=__name__,
    SECRET_KEY='census-tests-not-secret',
    MIDDLEWARE=['opencensus.ext.django.middleware.OpencensusMiddleware'],
    INSTALLED_APPS=[],
    DATABASES={},
    OPENCENSUS={'TRACE': {
        'SAMPLER': 'opencensus.trace.samplers.ProbabilitySampler(rate=%r)'
                   % float(os.environ.get('CENSUS_SAMPLING_RATE', '1.0')),
        'EXPORTER': exporter,
    }},
    LOGGING_CONFIG=None,
)
django.setup()


def hello(request):
    return HttpResponse('hello from django')


urlpatterns = [path('hello', hello)]

if __name__ == '__main__':
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
