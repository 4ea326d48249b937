"""Issue 13's pure pieces: host spellings, JSON depth, key entropy, public base URLs, file modes,
offline docs."""
from __future__ import annotations

import ipaddress
import json
import stat

import httpx
import pytest

from server.auth import KeyStore, estimated_key_bits, key_weakness, new_key
from server.bodies import json_nesting_depth, parse_json_object
from server.errors import ApiError
from server.media import is_forbidden_address
from server.urls import UrlError, parse_http_url, public_base_url
from tests.server.conftest import FACE, HEADERS, KEY, ServerThread, b64, make_settings, running, wait_terminal

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize("url", [
    "http://0177.0.0.1/", "http://0x7f.0.0.1/", "http://0x7f000001/", "http://2130706433/",
    "http://017700000001/", "http://127.1/", "http://127.0.1/", "http://0x7f.1/", "http://127.0.0.1./",
    "http://①②⑦.0.0.1/", "http://１２７．０．０．１/", "http://127。0。0。1/", "http://%31%32%37.0.0.1/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::127.0.0.1]/", "http://[0:0:0:0:0:ffff:7f00:1]/",
])
def test_every_spelling_of_loopback_reaches_the_check_as_loopback(url):
    target = parse_http_url(url)
    assert target.address == LOOPBACK and target.host in ("127.0.0.1", "::ffff:7f00:1", "::7f00:1")
    assert is_forbidden_address(target.address, [])


@pytest.mark.parametrize(("url", "address"), [
    ("http://0251.0376.0251.0376/", "169.254.169.254"), ("http://0xa9fea9fe/", "169.254.169.254"),
    ("http://10.1/", "10.0.0.1"), ("http://3232235521/", "192.168.0.1"), ("http://[::a00:1]/", "10.0.0.1"),
    ("http://0/", "0.0.0.0"), ("http://⑩.0.0.1/", "10.0.0.1"),
])
def test_private_numeric_forms_are_normalised(url, address):
    target = parse_http_url(url)
    assert target.address == ipaddress.ip_address(address)
    assert is_forbidden_address(target.address, [])


def test_names_are_lower_case_ascii_and_ports_kept():
    target = parse_http_url("HTTPS://Bücher.Example:8443/a%20b?x=1#frag")
    assert (target.scheme, target.host, target.port) == ("https", "xn--bcher-kva.example", 8443)
    assert target.target == "/a%20b?x=1" and target.address is None
    assert target.authority == "xn--bcher-kva.example:8443"
    assert target.at(ipaddress.ip_address("93.184.216.34")) == "https://93.184.216.34:8443/a%20b?x=1"


@pytest.mark.parametrize("url", [
    "http://256.0.0.1/", "http://1.2.3.4.5/", "http://0x1g.0.0.1/", "http://09.0.0.1/", "http://1..1/",
    "http://[zz]/", "http://[::1/", "http://[fe80::1%25eth0]/", "http://host:99999/", "http://host:8x/",
    "http://user:pw@127.0.0.1/", "http:///x", "http://exa mple.com/", "ftp://example.com/", "http://-bad-.com/",
    "http://a\x00b.com/", "http://١٢٧.0.0.1/", "javascript:alert(1)", "http://[::1]junk/",
])
def test_unparsable_urls_are_url_errors(url):
    with pytest.raises(UrlError):
        parse_http_url(url)


def test_public_addresses_stay_public():
    assert not is_forbidden_address(parse_http_url("http://134744072/").address, [])  # 8.8.8.8
    assert not is_forbidden_address(parse_http_url("http://[::ffff:8.8.8.8]/").address, [])


# -- JSON depth -------------------------------------------------------------------------------


def test_depth_is_measured_outside_strings():
    assert json_nesting_depth(b'{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert json_nesting_depth(b'{"a": "\\"[[[["}') == 1
    assert json_nesting_depth(b"") == 0


@pytest.mark.parametrize("body", [b"{" * 50_000, b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                                  b"[" * 100_000 + b"]" * 100_000])
def test_deep_bodies_are_400_before_parsing(body):
    with pytest.raises(ApiError) as caught:
        parse_json_object(body, 32)
    assert caught.value.status == 400 and "nested more than 32" in caught.value.message


def test_shallow_bodies_parse():
    body = {"image": "x" * 1000, "tags": [[1, 2], {"a": [3]}]}
    assert parse_json_object(json.dumps(body).encode(), 32) == body
    for bad, text in ((b"[1]", "JSON object"), (b"{", "not valid JSON"), (b"\xff", "not valid JSON"),
                      (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON")):
        with pytest.raises(ApiError) as caught:
            parse_json_object(bad, 32)
        assert caught.value.status == 400 and text in caught.value.message


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["weak", "SG_0123456789abcdef", "SG_aaaaaaaaaaaaaaaaaaaaaaaa", "SG_abcabcabcabcabcabc",
                                 "password", "SG_1234", "SG_has space_0000000000", "SG_ünïcödé_Xy7#kP2qLm9z"])
def test_weak_keys_are_refused_with_a_reason(key):
    assert key_weakness(key) is not None


def test_generated_and_random_keys_are_accepted():
    assert key_weakness("SG_7f3a9c2e5b8d1f46") is None
    assert key_weakness("k7#Qz9!mW2@pL5$x") is None
    assert estimated_key_bits(new_key()) <= 64 and len(new_key()) == 19


def test_cli_refuses_a_weak_key(tmp_path, capsys):
    from server import cli

    keys = tmp_path / "keys.json"
    assert cli.main(["keys", "--keys-file", str(keys), "add", "weak"]) == 2
    assert "too easy to guess" in capsys.readouterr().err and not keys.exists()


# -- public base URL ---------------------------------------------------------------------------

TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]
FORWARDED = {"host": "api.example.com", "x-forwarded-proto": "https", "x-forwarded-host": "evil.example",
             "x-forwarded-prefix": "/segmind"}


def base(headers, peer, configured=None, trusted=TRUSTED):
    return public_base_url(configured, headers, peer, "http", ("127.0.0.1", 8000), "", trusted)


def test_forwarded_headers_only_from_trusted_proxies():
    assert base(FORWARDED, "203.0.113.7") == "http://api.example.com"
    assert base(FORWARDED, "10.1.2.3") == "https://evil.example/segmind"
    assert base(FORWARDED, "::ffff:10.1.2.3") == "https://evil.example/segmind"
    assert base(FORWARDED, "10.1.2.3", configured="https://faces.example.com/") == "https://faces.example.com"


@pytest.mark.parametrize("host", ["evil.example/x?", "a b", "<script>", "", "host:port", "[::1"])
def test_malformed_hosts_fall_back_to_the_bound_address(host):
    assert base({"host": host}, "203.0.113.7") == "http://127.0.0.1:8000"


def test_malformed_forwarded_values_are_ignored():
    headers = {"host": "api.example.com", "x-forwarded-proto": "javascript", "x-forwarded-prefix": "/a b\r\n"}
    assert base(headers, "10.0.0.1") == "http://api.example.com"


def test_v2_urls_ignore_forwarded_host_from_an_untrusted_peer(tmp_path):
    settings = make_settings(tmp_path, trusted_proxies=["10.0.0.0/8"])
    KeyStore(settings.keys_file).add(KEY)
    thread = ServerThread(settings)
    thread.server.config.proxy_headers = False  # as `facefoundry serve` runs uvicorn
    with thread as server:
        body = {"image": "data:image/png;base64," + b64(FACE), "prompt": "x"}
        submit = httpx.post(f"{server.url}/v2/face-to-sticker", json=body,
                            headers={**HEADERS, "x-forwarded-host": "evil.example", "x-forwarded-proto": "https"})
        assert submit.status_code == 200
        urls = [submit.json()[k] for k in ("poll_url", "status_url", "response_url")]
        assert all(u.startswith(server.url + "/") for u in urls), urls
        done = wait_terminal(submit.json()["status_url"]).json()
        assert done["status"] == "COMPLETED"
        result = httpx.get(submit.json()["response_url"], headers={**HEADERS, "x-forwarded-host": "evil.example"})
        assert result.json()["output"].startswith(server.url + "/outputs/")


# -- files and docs ----------------------------------------------------------------------------


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_directory_is_private(tmp_path):
    data = tmp_path / "data"
    overrides = dict(keys_file=data / "keys.json", job_store=data / "jobs.sqlite", outputs_dir=data / "outputs")
    with running(tmp_path, **overrides) as server:
        submit = httpx.post(f"{server.url}/v2/face-to-sticker", headers=HEADERS,
                            json={"image": "data:image/png;base64," + b64(FACE), "prompt": "x"}).json()
        assert wait_terminal(submit["status_url"]).json()["status"] == "COMPLETED"
        assert mode(data) == 0o700 and mode(data / "outputs") == 0o700 and mode(data / "jobs.inputs") == 0o700
        for name in ("keys.json", "keys.json.lock", "jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"):
            assert mode(data / name) == 0o600, name
        outputs = list((data / "outputs").iterdir())
        assert outputs and all(mode(p) == 0o600 for p in outputs)


def test_existing_loose_modes_are_tightened(tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir(mode=0o755)
    (outputs / "old.png").write_bytes(b"x")
    (outputs / "old.png").chmod(0o644)
    with running(tmp_path):
        assert mode(outputs) == 0o700 and mode(outputs / "old.png") == 0o600
        assert mode(tmp_path / "jobs.sqlite") == 0o600 and mode(tmp_path / "keys.json") == 0o600


def test_docs_pages_load_nothing_from_other_hosts(tmp_path):
    with running(tmp_path) as server:
        for page in ("/docs", "/redoc"):
            html = httpx.get(server.url + page).text
            assert "https://" not in html and "http://" not in html, page
            for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css",
                          "/docs-assets/redoc.standalone.js"):
                if asset in html:
                    assert httpx.get(server.url + asset).status_code == 200
        assert "/docs-assets/swagger-ui-bundle.js" in httpx.get(server.url + "/docs").text
        assert "/docs-assets/redoc.standalone.js" in httpx.get(server.url + "/redoc").text
        assert httpx.get(server.url + "/openapi.json", headers={"x-api-key": KEY}).status_code == 200
