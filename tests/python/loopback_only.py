"""Imported first by the test programs: only loopback is reachable from them. Any other
connection or name lookup is refused, and the exporter's own usage telemetry (statsbeat) is
off."""
import ipaddress
import os
import socket

os.environ['APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL'] = 'true'

_connect = socket.socket.connect
_getaddrinfo = socket.getaddrinfo


def _loopback_only(host):
    if host in (None, 'localhost', b'localhost'):
        return
    ip = ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host)
    if not ip.is_loopback:
        raise ConnectionRefusedError('only loopback is reachable: %r' % (host,))


def _guarded_connect(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        _loopback_only(address[0])
    return _connect(sock, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    try:
        _loopback_only(host)
    except ValueError:
        raise socket.gaierror('no name lookups: %r' % (host,))
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.getaddrinfo = _guarded_getaddrinfo


def connection_string(port):
    return ('InstrumentationKey=00000000-0000-0000-0000-000000000001;'
            'IngestionEndpoint=http://127.0.0.1:%d/' % port)
