"""`parcelhook trigger` → `parcelhook listen` → the developer's app, over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner, Result

from parcelhook import __version__
from parcelhook.domain import signing
from parcelhook.receiver import verify_signature, verify_standard
from parcelhook.tools.listen import Listener, listen_command, serve_listener
from parcelhook.tools.trigger import DEMO_KEY, sample_payload, signed_request, trigger_command
from support.hostile_receiver import HostileReceiver, Mode, refused_port

KEY = "Signature-Key-2024!"
SECRET = signing.new_webhook_secret()


async def trigger(*args: str) -> Result:
    # in a thread: the command runs its own event loop with asyncio.run
    return await asyncio.to_thread(CliRunner().invoke, trigger_command, list(args))


@pytest.fixture
async def app() -> AsyncIterator[HostileReceiver]:
    """The developer's own app, which `listen` forwards to."""
    async with HostileReceiver(Mode.status(202, body=b'{"queued": true}')) as receiver:
        yield receiver


@pytest.fixture
async def listener() -> AsyncIterator[tuple[Listener, list[str]]]:
    lines: list[str] = []
    running = await serve_listener(key=KEY, secret=SECRET, echo=lines.append)
    yield running, lines
    await running.stop()


async def test_forwarded_bytes_are_identical_and_verify(app: HostileReceiver) -> None:
    lines: list[str] = []
    running = await serve_listener(
        key=KEY, secret=SECRET, forward_to=app.url("/webhooks"), echo=lines.append
    )
    try:
        result = await trigger(
            "parcel_status_changed",
            "--url",
            running.url,
            "--key",
            KEY,
            "--secret",
            SECRET,
            "--count",
            "2",
        )
    finally:
        await running.stop()
    assert result.exit_code == 0, result.output
    # the app's answer travels back through listen to trigger
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["202", "202"]
    assert all('{"queued": true}' in line for line in result.stdout.splitlines())
    statuses = []
    for request in app.requests:
        body, headers = request.body, request.headers
        assert verify_signature(body, headers["Sendcloud-Signature"], KEY)
        verify_standard(headers, body, SECRET)
        assert body == json.dumps(json.loads(body)).encode()
        assert headers["User-Agent"] == f"parcelhook/{__version__}"
        assert headers["Content-Type"] == "application/json"
        assert headers["webhook-id"] in "\n".join(lines)
        statuses.append(json.loads(body)["parcel"]["status"]["id"])
    assert statuses == [1000, 1]
    printed = [line for line in lines if "parcel_status_changed" in line]
    assert len(printed) == 2
    assert "signature ok" in printed[0] and "webhook-signature ok" in printed[0]
    assert "parcel 1001 status 1000 Ready to send" in printed[0]
    assert sum(line.strip().startswith("→") and " 202 " in line for line in lines) == 2


@pytest.mark.parametrize(
    ("action", "subject"),
    [
        ("parcel_status_changed", "parcel 1001 status 11 Delivered"),
        ("refund_requested", "refund 501 for parcel 1001"),
        ("integration_connected", "integration 7 (Demo Webshop)"),
        ("integration_updated", "integration 7 (Demo Webshop)"),
        ("integration_deleted", "integration 7 (Demo Webshop)"),
        ("test_webhook", "integration 7 (Demo Webshop)"),
    ],
)
async def test_every_action_is_received_and_printed(
    listener: tuple[Listener, list[str]], action: str, subject: str
) -> None:
    running, lines = listener
    status = ["--status", "11"] if action == "parcel_status_changed" else []
    result = await trigger(action, "--url", running.url, "--key", KEY, "--secret", SECRET, *status)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("200 ")
    [line] = lines
    assert re.match(rf"\d\d:\d\d:\d\d  {action}  evt_\w+  {re.escape(subject)}  signature ok", line)


async def test_without_key_trigger_uses_the_printed_demo_key() -> None:
    lines: list[str] = []
    running = await serve_listener(key=DEMO_KEY, echo=lines.append)
    try:
        result = await trigger("test_webhook", "--url", running.url)
    finally:
        await running.stop()
    assert result.exit_code == 0, result.output
    assert DEMO_KEY in result.stderr and "whsec_" in result.stderr
    assert "signature ok" in lines[0]


async def test_listen_answers_401_to_a_bad_signature_and_forwards_nothing(
    app: HostileReceiver,
) -> None:
    lines: list[str] = []
    running = await serve_listener(key=KEY, forward_to=app.url(), echo=lines.append)
    try:
        result = await trigger("integration_updated", "--url", running.url, "--key", "Wrong-Key-1!")
    finally:
        await running.stop()
    assert result.exit_code == 1
    assert result.stdout.startswith("401 ")
    assert "Error: 1 of 1 events were not accepted" in result.stderr
    assert "signature BAD" in lines[0]
    assert app.requests == []


async def test_listen_reports_an_unreachable_app_as_502() -> None:
    lines: list[str] = []
    with refused_port() as port:
        running = await serve_listener(
            key=KEY, forward_to=f"http://127.0.0.1:{port}/", echo=lines.append
        )
        try:
            result = await trigger("test_webhook", "--url", running.url, "--key", KEY)
        finally:
            await running.stop()
    assert result.stdout.startswith("502 ")
    assert "connection refused" in lines[-1]


async def test_listen_verbose_prints_the_whole_event() -> None:
    lines: list[str] = []
    running = await serve_listener(verbose=True, echo=lines.append)
    try:
        await trigger("refund_requested", "--url", running.url)
    finally:
        await running.stop()
    assert "signature unchecked" in lines[0]
    assert json.loads(lines[1])["refund"]["reason"] == "Parcel arrived damaged"
    assert '\n  "action": "refund_requested",' in lines[1]


async def test_listen_answers_400_to_malformed_json() -> None:
    lines: list[str] = []
    running = await serve_listener(key=KEY, echo=lines.append)
    body = b"{not json"
    headers = {"Sendcloud-Signature": signing.sendcloud_signature(body, KEY)}
    request = urllib.request.Request(running.url, data=body, headers=headers, method="POST")
    try:
        with pytest.raises(urllib.error.HTTPError) as caught:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
        caught.value.close()
    finally:
        await running.stop()
    assert caught.value.code == 400
    assert "malformed body" in lines[0] and "signature ok" in lines[0]


def test_trigger_to_a_closed_port_is_one_line_and_fails() -> None:
    with refused_port() as port:
        result = CliRunner().invoke(
            trigger_command,
            [
                "test_webhook",
                "--url",
                f"http://127.0.0.1:{port}/",
                "--key",
                KEY,
                "--secret",
                SECRET,
            ],
        )
    assert result.exit_code == 1
    assert result.output == f"Error: could not reach http://127.0.0.1:{port}/: connection refused\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["parcel_exploded"], "unknown action 'parcel_exploded'; choose one of: parcel_status_"),
        (["parcel_status_changed", "--status", "42"], "unknown status id 42; known ids: 1, 3,"),
        (["test_webhook", "--status", "11"], "--status applies only to parcel_status_changed"),
        (["test_webhook", "--secret", "whsec_%%"], "--secret: expected a whsec_ secret"),
    ],
)
def test_trigger_usage_errors_are_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(trigger_command, [*args, "--url", "http://127.0.0.1:9/"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {message}")
    assert result.output.count("\n") == 1


def test_listen_refuses_a_mistyped_secret_in_one_line() -> None:
    result = CliRunner().invoke(listen_command, ["--port", "0", "--secret", "whsec_abc"])
    assert (result.exit_code, result.output) == (
        1,
        "Error: --secret: expected a whsec_ secret: whsec_ followed by base64\n",
    )


def test_listen_on_a_busy_port_is_one_line_and_fails() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = CliRunner().invoke(listen_command, ["--port", str(port)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")
    assert result.output.count("\n") == 1


def test_listen_process_prints_events_and_exits_cleanly_on_sigint() -> None:
    command = [sys.executable, "-m", "parcelhook.tools.listen", "--port", "0", "--key", KEY]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        banner = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", banner)
        assert url, banner
        payload = sample_payload(
            "integration_deleted",
            now_ms=1_800_000_000_000,
            status_id=1,
            url="https://x",
            key=KEY,
            secret=SECRET,
        )
        body, headers = signed_request(payload, key=KEY, secret=SECRET, now_ms=1_800_000_000_000)
        request = urllib.request.Request(url.group(), data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        assert "integration_deleted" in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert err == ""
    assert out == "stopped\n"
