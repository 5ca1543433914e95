"""`camfabric proxy`: one fabric endpoint in front of many capture nodes.

An XSUB socket connects to every upstream node; an XPUB socket is bound for subscribers.
Messages travel downstream untouched and zero-copy; the proxy never decodes a frame. Send
high-water marks stay small: a slow subscriber loses old frames rather than building a queue;
heartbeats, scans and status wait for its room instead (`protocol.outlet.Outlet`, as a node's
publisher sends them), so a node's 64 heartbeats pass the proxy as they pass the node.

Subscriptions are where libzmq's own proxy (`zmq.proxy`, `zmq.proxy_steerable`) falls short:
XSUB forwards every subscribe but only the *last* unsubscribe of a topic (its own count must
reach zero), so after two subscribers came and went a node still counted one and kept
encoding for nobody. This proxy therefore runs its own loop on the XPUB's events — every
subscribe (XPUB_VERBOSE), and a topic's unsubscribe only once its last subscriber left (a
plain SUB socket that subscribed to a topic twice also sends one unsubscribe only, so
counting messages would never come back to zero) — and towards the nodes it stands for
exactly one subscriber per topic:

- the first subscriber of a topic → subscribe upstream;
- each further subscriber → unsubscribe and subscribe again upstream, so the node sees a new
  subscriber and answers it from its last-value cache at once (a late joiner behind the proxy
  waits no longer than one in front of it);
- the last subscriber leaving → unsubscribe upstream: the node stops producing that topic.

Both hops get the fabric's link liveness (`protocol.link.configure_link`): a node whose host
lost power is noticed and reconnected as a Subscriber would. With CURVE towards subscribers,
`authorized_keys_dir` is followed as a node's Publisher follows it: a removed key ends every
downstream connection, so a revoked client receives nothing more.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

import zmq

from camfabric.protocol.link import MAX_SUBSCRIPTION, configure_link
from camfabric.protocol.outlet import Outlet
from camfabric.protocol.security import (
    CurveClient,
    CurveServer,
    is_loopback_endpoint,
    secure_client,
    secure_server,
)
from camfabric.runtime.config import load_section
from camfabric.runtime.errors import CamfabricError, ConfigError
from camfabric.runtime.process import stop_event
from camfabric.runtime.threads import Background, Ready, start_thread

HELP = "forward many nodes' fabric through one endpoint"
DESCRIPTION = """\
Forward the fabric of several capture nodes through one endpoint, so gateways and robot code
connect to one address. Subscriptions are passed upstream one by one, so nodes still encode
only what someone wants and still answer late joiners at once.

Example configuration (camfabric.toml):

    [proxy]
    upstream = ["tcp://10.0.0.11:5550", "tcp://10.0.0.12:5550"]
    publish = "tcp://127.0.0.1:5570"
    # CURVE towards the nodes (this proxy's key pair and each node's public key):
    # upstream_curve = { secret_key_file = "keys/proxy.key_secret",
    #                    server_public_key_file = "keys/node.key" }
    # CURVE towards subscribers, required beyond loopback; the directory is followed while the
    # proxy runs (a key removed there is cut off within seconds):
    # curve = { secret_key_file = "keys/proxy.key_secret", authorized_keys_dir = "keys/clients" }
"""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxyConfig:
    """The `[proxy]` section."""

    upstream: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5550"])
    publish: str = "tcp://127.0.0.1:5570"
    insecure: bool = False
    curve: CurveServer | None = None
    upstream_curve: CurveClient | None = None
    sndhwm: int = 4

    def __post_init__(self) -> None:
        if not self.upstream:
            raise ConfigError("upstream", "list at least one node endpoint")
        if not is_loopback_endpoint(self.publish) and not (self.curve or self.insecure):
            raise ConfigError("publish", f"{self.publish} is not loopback: configure curve keys "
                                         "([proxy.curve]) or set insecure = true")


class FabricProxy(Background):
    """Forwards messages down and subscriptions up between an XSUB and an XPUB socket."""

    def __init__(self, config: ProxyConfig, context: zmq.Context | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.endpoint = config.publish
        self.forwarded = 0
        # Subscriptions per topic since its first subscriber came, while anyone is subscribed.
        self.subscribers: Counter[bytes] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 5.0) -> FabricProxy:
        """Bind, connect upstream and start forwarding on a background thread; raises what
        binding or connecting raised (e.g. address in use) as a CamfabricError."""
        try:
            self._thread = start_thread(self._run, name="camfabric-proxy", timeout=timeout)
        except zmq.ZMQError as exc:
            raise CamfabricError(f"proxy cannot publish on {self.config.publish} or reach "
                                 f"{', '.join(self.config.upstream)}: {exc}") from exc
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, ready: Ready) -> None:
        xsub = self.context.socket(zmq.XSUB)
        xpub = self.context.socket(zmq.XPUB)
        auth = None
        try:
            for sock in (xsub, xpub):
                sock.linger = 0
            xsub.rcvhwm = self.config.sndhwm
            xpub.sndhwm = self.config.sndhwm
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)  # not VERBOSER: see the module docstring
            # Liveness on both hops: an upstream node whose host lost power is dropped and
            # reconnected (XSUB then sends its subscriptions again), a dead subscriber too; a
            # node that came back is reached again within seconds, as a Subscriber does.
            configure_link(xsub)
            configure_link(xpub, max_message=MAX_SUBSCRIPTION)
            if self.config.curve is not None:
                auth = secure_server(xpub, self.config.curve, self.context)
            xpub.bind(self.config.publish)
            self.endpoint = xpub.getsockopt_string(zmq.LAST_ENDPOINT)
            if self.config.upstream_curve is not None:
                secure_client(xsub, self.config.upstream_curve)
            for endpoint in self.config.upstream:
                xsub.connect(endpoint)
        except BaseException:  # start_thread raises it in start()
            xsub.close(linger=0)
            xpub.close(linger=0)
            if auth is not None:
                auth.stop()
            raise
        outlet = Outlet(xpub)
        ready.set()
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(outlet.timeout_ms(100)))
                outlet.flush()
                if xsub in events:
                    self._pump(xsub, outlet)
                if xpub in events:
                    self._subscriptions(xpub, xsub)
                if auth is not None:
                    auth.check(xpub, self.endpoint)  # follows authorized_keys_dir
        finally:
            xsub.close(linger=0)
            xpub.close(linger=0)
            if auth is not None:
                auth.stop()

    def _subscriptions(self, xpub: zmq.Socket, xsub: zmq.Socket) -> None:
        """Count downstream (un)subscriptions per topic and pass on what the nodes must see."""
        for _ in range(256):
            try:
                parts = xpub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parts[0]
            if len(parts) != 1 or not event or event[0] not in (0, 1):
                xsub.send_multipart(parts)  # not a subscription: pass it on as it came
                continue
            topic = event[1:]
            if event[0] == 1:
                self.subscribers[topic] += 1
                if self.subscribers[topic] > 1:
                    xsub.send(b"\x00" + topic)  # XSUB passes it: its own count drops to zero
                xsub.send(b"\x01" + topic)
            elif topic in self.subscribers:  # the topic's last subscriber left
                del self.subscribers[topic]
                xsub.send(b"\x00" + topic)

    def _pump(self, source: zmq.Socket, outlet: Outlet) -> None:
        for _ in range(256):
            try:
                parts = source.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            # A full subscriber loses a frame (its receiver counts the gap); the rest waits.
            if outlet.send(parts):
                self.forwarded += 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", action="append", metavar="ENDPOINT",
                        help="a node endpoint (repeatable); overrides the config")
    parser.add_argument("--publish", metavar="ENDPOINT", help="endpoint to bind for subscribers")


def settings(args: argparse.Namespace) -> ProxyConfig:
    """The `[proxy]` section of `args.config`, with --upstream and --publish in place of its
    endpoints where given (every other key, `sndhwm` too, as configured)."""
    config = load_section(args.config, "proxy", ProxyConfig)
    if args.upstream or args.publish:
        config = dataclasses.replace(config, upstream=args.upstream or config.upstream,
                                     publish=args.publish or config.publish)
    return config


def run(args: argparse.Namespace) -> int:
    config = settings(args)
    if config.insecure and not is_loopback_endpoint(config.publish):
        log.warning("publishing on %s WITHOUT encryption (insecure = true)", config.publish)
    stop = stop_event()
    with FabricProxy(config) as proxy:
        log.info("proxy: %s -> %s", ", ".join(config.upstream), proxy.endpoint)
        stop.wait()
    return 0
