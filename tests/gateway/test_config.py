"""The [gateway] section: defaults, and errors that name the key."""

from __future__ import annotations

import pytest

from camfabric.gateway.config import GatewayConfig, load_gateway_config
from camfabric.protocol import ConfigError, generate_keypair


def load(tmp_path, text: str) -> GatewayConfig:
    path = tmp_path / "camfabric.toml"
    path.write_text(text)
    return load_gateway_config(path)


def test_defaults_follow_the_fabric():
    config = load_gateway_config(None)
    assert (config.host, config.port) == ("127.0.0.1", 8081)
    # Cameras only from the node's port; the tracker and the services only where configured,
    # so whoever binds their usual ports can publish neither a camera nor a world.
    assert config.subscribe == ("tcp://127.0.0.1:5550",)
    assert config.tracker == () and config.services == ()
    assert config.owners == {} and config.max_cameras == 256
    assert config.snap_timeout_s == 2.0 and config.heartbeat_timeout_s == 3.0
    assert config.default_camera == 0 and config.workers == 0  # 0: decided by the host
    assert config.shares_host and config.pin_cpus is None
    assert config.request_threads > config.max_streams
    assert config.loopback_only


def test_a_full_section_loads(tmp_path):
    _, secret = generate_keypair(tmp_path, "gateway")
    public, _ = generate_keypair(tmp_path, "node")
    config = load(tmp_path, f"""
[gateway]
host = "0.0.0.0"
port = 9000
subscribe = ["tcp://10.0.0.5:5550"]
max_streams = 4
threads = 10
workers = 3
allow_from = ["192.168.1.0/24"]

[gateway.curve."tcp://10.0.0.5:5550"]
secret_key_file = "{secret}"
server_public_key_file = "{public}"
""")
    assert config.request_threads == 10 and config.workers == 3 and not config.loopback_only
    assert str(config.networks[0]) == "192.168.1.0/24"
    assert set(config.curve_clients) == {"tcp://10.0.0.5:5550"}


@pytest.mark.parametrize(("text", "path"), [
    ("[gateway]\nprot = 1\n", "gateway.prot"),
    ("[gateway]\nport = 70000\n", "gateway.port"),
    ('[gateway]\nsnap_timeout_s = "2"\n', "gateway.snap_timeout_s"),
    ("[gateway]\nmax_streams = 8\nthreads = 8\n", "gateway.threads"),
    ('[gateway]\nallow_from = ["10.0.0.0/8", "lan"]\n', "gateway.allow_from[1]"),
    ('[gateway]\nsubscribe = ["127.0.0.1:5550"]\n', "gateway.subscribe[0]"),
    ("[gateway]\nsubscribe = []\n", "gateway.subscribe"),
    ('[gateway]\ntracker = ["localhost:5560"]\n', "gateway.tracker[0]"),
    ('[gateway]\nowners = { cam0 = "cell" }\n', "gateway.owners.cam0"),
    ("[gateway]\nmax_cameras = 0\n", "gateway.max_cameras"),
    ("[gateway]\nworkers = -1\n", "gateway.workers"),
    ("[gateway]\nnode_on_host = \"yes\"\n", "gateway.node_on_host"),
    ('[gateway]\nice_servers = ["stun:a.example:3478", "http://b.example"]\n', "gateway.ice_servers[1]"),
    ('[gateway]\nice_servers = "stun:a.example:3478"\n', "gateway.ice_servers"),
    ('[gateway.curve."tcp://10.9.9.9:5550"]\nsecret_key_file = "a"\nserver_public_key_file = "b"\n',
     "gateway.curve.tcp://10.9.9.9:5550"),
    ('[gateway]\nsubscribe = ["tcp://10.9.9.9:5550"]\n[gateway.curve."tcp://10.9.9.9:5550"]\n'
     'secret_key_file = "/nonexistent/gw.key_secret"\nserver_public_key_file = "/nonexistent/n.key"\n',
     "gateway.curve.tcp://10.9.9.9:5550.secret_key_file"),
])
def test_bad_values_name_the_key(tmp_path, text, path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.path == path


def test_ice_servers_load_as_a_list_of_urls(tmp_path):
    config = load(tmp_path, '[gateway]\nice_servers = ["stun:stun.example.org:3478"]\n')
    assert config.ice_servers == ("stun:stun.example.org:3478",)
    assert load_gateway_config(None).ice_servers == ()  # none by default: host candidates only


def test_the_public_surface_is_all():
    import camfabric.gateway as gateway

    assert sorted(gateway.__all__) == ["FrameCache", "Gateway", "GatewayConfig", "MjpegStream",
                                       "StreamSlots", "StreamStats", "create_app",
                                       "load_gateway_config", "serve"]
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None

