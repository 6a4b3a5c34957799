"""Loopback ports and counting what goes over the network, for tests that must prove a failure
was quick by what it did (how many connection attempts) rather than by a stopwatch.

  free_port() / closed_port()   a loopback port nobody listens on (free for a server to take)
  tcp_connects()                every TCP connect this process starts inside the block
  is_loopback(host)             whether a connect stayed on this machine

Other threads of the session (Prefect's event and log workers) may connect to the session's
servers at any time: count the port a test owns, not every connect.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A loopback port that nobody listens on (the OS's pick; free once this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


closed_port = free_port   # the name for an endpoint that must refuse connections


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@contextmanager
def tcp_connects() -> Iterator[list[tuple[str, int]]]:
    """Yield a list that receives (host, port) for every TCP connect() any thread of this process
    starts while the block runs: blocking (urllib3, socket.create_connection) and asyncio
    (aiohttp, aiobotocore) sockets alike. Filter by port to count one endpoint's attempts."""
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def record(sock: socket.socket, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with lock:
                seen.append((address[0], address[1]))

    def connect(self, address):
        record(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        record(self, address)
        return real_connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    try:
        yield seen
    finally:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex
