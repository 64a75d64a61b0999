"""gRPC servers as swarm nodes run them: bounded messages, no shared ports, clear bind errors."""

from __future__ import annotations

from concurrent import futures

import grpc


class ListenError(RuntimeError):
    """A server cannot listen where it was told to; the message names the flag to change."""


def new_server(thread_prefix: str, max_message_bytes: int, workers: int = 32) -> grpc.Server:
    # SO_REUSEPORT off: a second node on a taken port must fail, not share it silently.
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_prefix),
        options=[("grpc.so_reuseport", 0),
                 ("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", max_message_bytes)])


def listen_secure(server: grpc.Server, address: str, credentials: grpc.ServerCredentials,
                  flag: str) -> None:
    try:
        bound = server.add_secure_port(address, credentials)
    except RuntimeError:
        bound = 0
    if not bound:
        raise ListenError(f"cannot listen on {address} ({flag}): the port is in use or the "
                          f"address is not this host's; pick another with {flag}")
