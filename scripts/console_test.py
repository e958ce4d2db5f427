#!/usr/bin/env python3
"""Browser test of the web console (GET /ui) against real brokers.

Playwright for Python drives Debian's chromium (never `playwright install`)
against `ubroker` binaries started here on 127.0.0.1:0 and stopped by PID
whatever happens. Covers: every queue's figures, refresh without reload (at
least every 2 s), publish and acknowledge rates, the depth chart, dead-letter
queues with redrive, settings and delete each with a confirmation, creating a
queue, accessible names, the --auth-token sign-in (wrong token, session-only
storage, bearer header), and a cluster behind a proxy that routes as the
SPEC's HAProxy does (GET /nodes, /nodes/{i}/...), with a node down, and the
same through scripts/cluster.sh and the real HAProxy.

Usage: console_test.py BROKER_BINARY [--screenshot PATH] [-k SUBSTRING]
Prints one line per test and `console: N passed, N failed`; exit status 1 if
any failed.
"""

import http.client
import http.server
import json
import re
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# How long a condition may take to show in the page (the console refreshes
# every second); a bound for a wait, never a measured figure.
WAIT_MS = 15_000

BINARY = None


class Broker:
    """A `ubroker` process on 127.0.0.1:0, killed by PID on stop."""

    def __init__(self, *flags):
        self.process = subprocess.Popen(
            [BINARY, "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"broker did not start: {line!r}")
        self.url = match.group(1)
        self.token = None
        for i, flag in enumerate(flags):
            if flag == "--auth-token":
                self.token = flags[i + 1]

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def call(self, method, path, body=None, token=None):
        """(status, JSON body) of one request."""
        token = token if token is not None else self.token
        return http_call(self.url, method, path, body, token)

    def ok(self, method, path, body=None):
        status, data = self.call(method, path, body)
        assert status == 200, (method, path, status, data)
        return data

    def publish(self, queue, *bodies):
        if len(bodies) == 1:
            return self.ok("POST", f"/queues/{queue}/publish", {"body": bodies[0]})
        return self.ok("POST", f"/queues/{queue}/publish", {"messages": [{"body": b} for b in bodies]})

    def info(self, queue):
        status, data = self.call("GET", f"/queues/{queue}")
        return data if status == 200 else None


def http_call(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, method=method, data=data)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw = error.read()
        status = error.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class ClusterProxy:
    """Routes as the cluster's HAProxy does (SPEC part 3, Cluster): GET /nodes
    answers {"nodes": N}; /nodes/{i}/... goes to node i without the prefix;
    /queues/{q}[/...] goes to the node owning q (`q--k` on node k mod N, any
    other name on node 0); everything else to node 0. A node that does not
    answer is `503 unavailable`."""

    def __init__(self, nodes):
        self.nodes = nodes
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def route(self):
                path = self.path
                if path == "/nodes":
                    return None, None
                match = re.match(r"^/nodes/(\d+)(/.*)$", path)
                if match:
                    return int(match.group(1)), match.group(2)
                match = re.match(r"^/queues/([^/?]+)", path)
                if match:
                    part = re.search(r"--(\d+)(\.dead)?$", match.group(1))
                    node = int(part.group(1)) % len(proxy.nodes) if part else 0
                    return node, path
                return 0, path

            def answer(self, status, body, content_type="application/json", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def forward(self):
                node, path = self.route()
                if node is None:
                    return self.answer(200, json.dumps({"nodes": len(proxy.nodes)}).encode())
                if node >= len(proxy.nodes):
                    return self.answer(404, b'{"error":"no such node","code":"not_found"}')
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                host, port = proxy.nodes[node].url.removeprefix("http://").split(":")
                try:
                    connection = http.client.HTTPConnection(host, int(port), timeout=30)
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() in ("authorization", "content-type")}
                    connection.request(self.command, path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    keep = [(k, v) for k, v in response.getheaders()
                            if k.lower() not in ("content-length", "content-type", "connection",
                                                 "transfer-encoding", "date", "server")]
                    self.answer(response.status, data,
                                response.getheader("Content-Type", "application/json"), keep)
                    connection.close()
                except OSError:
                    self.answer(503, b'{"error":"node unavailable","code":"unavailable"}')

            do_GET = do_POST = do_PUT = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---- helpers on the page ------------------------------------------------------

def open_console(browser, base, requests=None):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    if requests is not None:
        page.on("request", lambda r: requests.append((time.monotonic(), r.url, r.headers)))
    page.goto(base + "/ui")
    return context, page


def row(page, table, queue):
    return page.locator(f"#{table} tbody tr[data-queue='{queue}']")


def cell(page, table, queue, field):
    return row(page, table, queue).locator(f"[data-field='{field}']")


def wait_positive(page, table, queue, field):
    """Waits until the cell's number (commas removed) is above 0, polling
    every animation frame so that a value shown for one refresh only is
    seen. (Functions, not expression strings: the page's CSP forbids eval.)"""
    page.wait_for_function(
        """([table, queue, field]) => {
            const c = document.querySelector(`#${table} tbody tr[data-queue='${queue}'] [data-field='${field}']`);
            return !!c && parseFloat(c.textContent.replace(/,/g, '')) > 0;
        }""",
        arg=[table, queue, field], polling="raf", timeout=WAIT_MS)


# ---- tests ----------------------------------------------------------------------

def test_every_figure_refreshes_without_reload(browser, broker):
    broker.ok("PUT", "/queues/jobs", {"ttl_ms": 30000})
    broker.publish("jobs", *[f"job {i}" for i in range(5)])
    broker.ok("GET", "/queues/jobs/fetch?max=2")
    broker.ok("POST", "/queues/jobs/publish?delay=600000", {"body": "later"})
    # A fetch that waits, on its own thread, until a publish releases it.
    waiting = threading.Thread(
        target=lambda: broker.call("GET", "/queues/idle/fetch?wait=25000"), daemon=True)
    broker.ok("PUT", "/queues/idle", {})
    waiting.start()
    requests = []
    context, page = open_console(browser, broker.url, requests)
    try:
        expect(row(page, "queues", "jobs")).to_be_visible(timeout=WAIT_MS)
        expect(cell(page, "queues", "jobs", "ready")).to_have_text("3")
        expect(cell(page, "queues", "jobs", "in_flight")).to_have_text("2")
        expect(cell(page, "queues", "jobs", "delayed")).to_have_text("1")
        expect(cell(page, "queues", "jobs", "bytes")).to_have_text(re.compile(r"^\d+ B$"))
        expect(cell(page, "queues", "jobs", "oldest_ready_age")).to_have_text(re.compile(r"\d+(\.\d)? (ms|s)"))
        expect(cell(page, "queues", "jobs", "ttl_ms")).to_have_text("30,000 ms")
        expect(cell(page, "queues", "idle", "waiting_fetches")).to_have_text("1", timeout=WAIT_MS)
        page.evaluate("window.__notReloaded = true")
        broker.publish("jobs", "a", "b", "c", "d")
        expect(cell(page, "queues", "jobs", "ready")).to_have_text("7", timeout=WAIT_MS)
        broker.publish("idle", "wake")
        waiting.join()
        expect(cell(page, "queues", "idle", "waiting_fetches")).to_have_text("0", timeout=WAIT_MS)
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
        # At least every 2 s: the gaps between /stats reads.
        while len([r for r in requests if r[1].endswith("/stats")]) < 5:
            page.wait_for_timeout(200)
        times = [t for t, url, _ in requests if url.endswith("/stats")]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert statistics.median(gaps) <= 2.0, gaps
        # Nothing but the broker was asked for anything.
        foreign = [url for _, url, _ in requests if not url.startswith(broker.url + "/")]
        assert not foreign, foreign
    finally:
        context.close()


def test_rates_and_depth_chart_update(browser, broker):
    broker.ok("PUT", "/queues/rates", {})
    context, page = open_console(browser, broker.url)
    try:
        expect(row(page, "queues", "rates")).to_be_visible(timeout=WAIT_MS)
        page.wait_for_function("() => Number(document.getElementById('chart').dataset.samples) >= 2",
                               timeout=WAIT_MS)
        before = page.locator("#chart polyline.ready").get_attribute("points")
        samples = int(page.locator("#chart").get_attribute("data-samples"))
        broker.publish("rates", *[f"m{i}" for i in range(40)])
        wait_positive(page, "queues", "rates", "publish_rate")
        page.wait_for_function(
            "() => parseFloat(document.getElementById('total-publish-rate').textContent) > 0",
            polling="raf", timeout=WAIT_MS)
        taken = broker.ok("GET", "/queues/rates/fetch?max=25")["messages"]
        broker.ok("POST", "/queues/rates/acknowledge", {"ids": [m["id"] for m in taken]})
        wait_positive(page, "queues", "rates", "ack_rate")
        # The chart gained samples and its ready line moved.
        page.wait_for_function(
            "(n) => Number(document.getElementById('chart').dataset.samples) > n",
            arg=samples + 1, timeout=WAIT_MS)
        after = page.locator("#chart polyline.ready").get_attribute("points")
        assert after != before
        points = after.split(" ")
        assert len(points) == int(page.locator("#chart").get_attribute("data-samples"))
        assert row(page, "queues", "rates").locator("svg.spark polyline").count() == 1
    finally:
        context.close()


def make_dead_letters(broker, queue, n):
    broker.ok("PUT", f"/queues/{queue}", {"max_deliveries": 1})
    broker.publish(queue, *[f"{queue} {i}" for i in range(n)])
    for message in broker.ok("GET", f"/queues/{queue}/fetch?max={n}")["messages"]:
        broker.ok("POST", f"/queues/{queue}/requeue/{message['id']}")


def test_dead_letters_redrive_with_confirmation(browser, broker):
    make_dead_letters(broker, "mail", 2)
    assert broker.info("mail.dead")["ready"] == 2
    context, page = open_console(browser, broker.url)
    try:
        expect(cell(page, "dead", "mail.dead", "source")).to_have_text("mail", timeout=WAIT_MS)
        expect(cell(page, "dead", "mail.dead", "ready")).to_have_text("2")
        page.get_by_role("button", name="Redrive mail.dead to mail").click()
        dialog = page.get_by_role("alertdialog")
        expect(dialog).to_contain_text("Move the 2 ready message(s) of mail.dead back to mail?")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        assert broker.info("mail.dead")["ready"] == 2, "cancel changed something"
        page.get_by_role("button", name="Redrive mail.dead to mail").click()
        dialog.get_by_role("button", name="Redrive").click()
        expect(page.locator("#notice")).to_have_text("Moved 2 message(s) from mail.dead to mail.",
                                                     timeout=WAIT_MS)
        assert broker.info("mail.dead")["ready"] == 0
        assert broker.info("mail")["ready"] == 2
        expect(cell(page, "dead", "mail.dead", "ready")).to_have_text("0", timeout=WAIT_MS)
        expect(cell(page, "queues", "mail", "ready")).to_have_text("2", timeout=WAIT_MS)
    finally:
        context.close()


def test_settings_with_confirmation(browser, broker):
    broker.ok("PUT", "/queues/settle", {"ttl_ms": 30000, "max_deliveries": 0})
    context, page = open_console(browser, broker.url)
    try:
        expect(row(page, "queues", "settle")).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("button", name="Settings of queue settle").click()
        settings = page.get_by_role("dialog", name="Settings of queue settle")
        expect(settings.get_by_label("Lease TTL (ms)")).to_have_value("30000")
        settings.get_by_label("Lease TTL (ms)").fill("7000")
        settings.get_by_label("Max deliveries (0: unlimited)").fill("3")
        settings.get_by_role("button", name="Save settings").click()
        confirm = page.get_by_role("alertdialog")
        expect(confirm).to_contain_text("lease TTL of 7,000 ms and at most 3 deliveries")
        confirm.get_by_role("button", name="Cancel").click()
        info = broker.info("settle")
        assert (info["ttl_ms"], info["max_deliveries"]) == (30000, 0), info
        page.get_by_role("button", name="Settings of queue settle").click()
        settings.get_by_label("Lease TTL (ms)").fill("7000")
        settings.get_by_label("Max deliveries (0: unlimited)").fill("3")
        settings.get_by_role("button", name="Save settings").click()
        confirm.get_by_role("button", name="Apply settings").click()
        expect(page.locator("#notice")).to_contain_text("Queue settle: lease TTL 7,000 ms",
                                                        timeout=WAIT_MS)
        info = broker.info("settle")
        assert (info["ttl_ms"], info["max_deliveries"]) == (7000, 3), info
        expect(cell(page, "queues", "settle", "ttl_ms")).to_have_text("7,000 ms", timeout=WAIT_MS)
        expect(cell(page, "queues", "settle", "max_deliveries")).to_have_text("3")
        # A value the broker refuses is shown with its code, and changes nothing.
        page.get_by_role("button", name="Settings of queue settle").click()
        settings.get_by_label("Lease TTL (ms)").fill("999999999999")
        settings.get_by_role("button", name="Save settings").click()
        confirm.get_by_role("button", name="Apply settings").click()
        expect(page.locator("#notice")).to_contain_text("(invalid_request)", timeout=WAIT_MS)
        assert broker.info("settle")["ttl_ms"] == 7000
    finally:
        context.close()


def test_delete_with_confirmation_and_create(browser, broker):
    broker.publish("doomed", "x", "y", "z")
    context, page = open_console(browser, broker.url)
    try:
        expect(row(page, "queues", "doomed")).to_be_visible(timeout=WAIT_MS)
        page.get_by_role("button", name="Delete queue doomed").click()
        confirm = page.get_by_role("alertdialog")
        expect(confirm).to_contain_text("Delete queue doomed and its 3 message(s)?")
        confirm.get_by_role("button", name="Cancel").click()
        assert broker.info("doomed") is not None, "cancel deleted the queue"
        page.get_by_role("button", name="Delete queue doomed").click()
        confirm.get_by_role("button", name="Delete queue").click()
        expect(page.locator("#notice")).to_have_text("Deleted queue doomed and its 3 message(s).",
                                                     timeout=WAIT_MS)
        assert broker.info("doomed") is None
        expect(row(page, "queues", "doomed")).to_have_count(0, timeout=WAIT_MS)

        page.get_by_label("New queue").fill("fresh")
        page.get_by_label("Lease TTL (ms)").first.fill("1234")
        page.get_by_role("button", name="Create queue").click()
        expect(cell(page, "queues", "fresh", "ttl_ms")).to_have_text("1,234 ms", timeout=WAIT_MS)
        assert broker.info("fresh")["ttl_ms"] == 1234
    finally:
        context.close()


def test_every_control_has_an_accessible_name(browser, broker):
    make_dead_letters(broker, "named", 1)
    context, page = open_console(browser, broker.url)
    try:
        expect(row(page, "dead", "named.dead")).to_be_visible(timeout=WAIT_MS)
        unnamed = page.evaluate("""() => [...document.querySelectorAll('button, input, select, textarea')]
            .filter(e => !((e.getAttribute('aria-label') || '').trim()
                || [...(e.labels || [])].some(l => l.textContent.trim())
                || (e.tagName === 'BUTTON' && e.textContent.trim())))
            .map(e => e.outerHTML)""")
        assert not unnamed, unnamed
        for name in ["Settings of queue named", "Delete queue named", "Redrive named.dead to named",
                     "Delete queue named.dead", "Create queue"]:
            expect(page.get_by_role("button", name=name, exact=True)).to_have_count(1)
        expect(page.get_by_role("checkbox", name="Pause refresh")).to_have_count(1)
        # Keyboard focus on a row's button survives the refreshes that rebuild the rows.
        page.get_by_role("button", name="Delete queue named", exact=True).focus()
        samples = int(page.locator("#chart").get_attribute("data-samples"))
        page.wait_for_function("(n) => Number(document.getElementById('chart').dataset.samples) > n",
                               arg=samples + 1, timeout=WAIT_MS)
        assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Delete queue named"
        expect(page.get_by_role("img", name="Depth of all queues over the last 5 minutes")).to_have_count(1)
    finally:
        context.close()


def test_auth_token_sign_in(browser, _):
    token = "console-test-token-0123456789"
    broker = Broker("--auth-token", token)
    try:
        broker.ok("PUT", "/queues/secretqueue", {})
        # /ui is served without the token and holds no data; the data is guarded.
        status, page_html = http_call(broker.url, "GET", "/ui")
        assert status == 200 and "secretqueue" not in page_html
        assert http_call(broker.url, "GET", "/stats")[0] == 401
        requests = []
        context, page = open_console(browser, broker.url, requests)
        try:
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_role("alert")).to_contain_text("requires a token")
            expect(page.locator("#app")).to_be_hidden()
            page.get_by_label("Auth token").fill("wrong-token")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text(
                "The broker refused this token (401 unauthorized)", timeout=WAIT_MS)
            assert page.evaluate("sessionStorage.getItem('ubroker-token')") is None
            expect(page.locator("#app")).to_be_hidden()
            page.get_by_label("Auth token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            expect(row(page, "queues", "secretqueue")).to_be_visible(timeout=WAIT_MS)
            assert page.evaluate("sessionStorage.getItem('ubroker-token')") == token
            assert page.evaluate("localStorage.length") == 0
            sent = [h.get("authorization") for _, url, h in requests if url.endswith("/stats")]
            assert f"Bearer {token}" in sent, sent
            # Kept for the tab's session: a reload stays signed in ...
            page.reload()
            expect(row(page, "queues", "secretqueue")).to_be_visible(timeout=WAIT_MS)
            # ... a new session asks again.
            other, other_page = open_console(browser, broker.url)
            expect(other_page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=WAIT_MS)
            other.close()
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            assert page.evaluate("sessionStorage.getItem('ubroker-token')") is None
        finally:
            context.close()
    finally:
        broker.stop()


def test_cluster_shows_every_node(browser, _):
    nodes = [Broker(), Broker()]
    proxy = None
    try:
        proxy = ClusterProxy(nodes)
        assert http_call(proxy.url, "POST", "/queues/c--0/publish", {"body": "a"})[0] == 200
        assert http_call(proxy.url, "POST", "/queues/c--1/publish", {"body": "b"})[0] == 200
        assert http_call(proxy.url, "POST", "/queues/c--1/publish", {"body": "c"})[0] == 200
        assert nodes[1].info("c--1")["ready"] == 2 and nodes[0].info("c--1") is None
        context, page = open_console(browser, proxy.url)
        try:
            expect(page.locator("#queues tbody tr[data-queue='c--0'][data-node='0']")).to_be_visible(
                timeout=WAIT_MS)
            node1 = page.locator("#queues tbody tr[data-queue='c--1'][data-node='1']")
            expect(node1.locator("[data-field='ready']")).to_have_text("2")
            expect(page.locator("#total-nodes")).to_have_text("2 of 2 up")
            expect(page.get_by_role("columnheader", name="Node").first).to_be_visible()
            # Actions go to the node that holds the queue.
            node1.get_by_role("button", name="Delete queue c--1").click()
            page.get_by_role("alertdialog").get_by_role("button", name="Delete queue").click()
            expect(page.locator("#notice")).to_contain_text("Deleted queue c--1", timeout=WAIT_MS)
            assert nodes[1].info("c--1") is None
            nodes[1].stop()
            expect(page.locator("#total-nodes")).to_have_text("1 of 2 up", timeout=WAIT_MS)
            expect(page.get_by_role("list", name="Nodes")).to_contain_text("node 1: unreachable")
            expect(page.locator("#queues tbody tr[data-queue='c--0']")).to_be_visible()
        finally:
            context.close()
    finally:
        if proxy:
            proxy.stop()
        for node in nodes:
            node.stop()


def free_ports(n):
    """A port P with P ... P+n-1 all free on 127.0.0.1 (as cluster.sh needs)."""
    import random
    import socket
    for _ in range(100):
        base = random.randint(20000, 40000)
        sockets = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports")


def test_cluster_behind_haproxy(browser, _):
    """The same through scripts/cluster.sh: three nodes behind the real
    HAProxy (Debian's haproxy), one then killed."""
    import os
    import shutil
    import tempfile
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cluster = os.path.join(root, "scripts", "cluster.sh")
    work = tempfile.mkdtemp(prefix="console-cluster-")
    port = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UBROKER_")}
    env["UBROKER_BIN"] = os.path.abspath(BINARY)
    try:
        subprocess.run([cluster, "up", work, "--nodes", "3", "--port", str(port)], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for k in range(3):
            assert http_call(url, "POST", f"/queues/jobs--{k}/publish", {"body": f"to {k}"})[0] == 200
        assert http_call(url, "POST", "/queues/jobs--2/publish", {"body": "again"})[0] == 200
        context, page = open_console(browser, url)
        try:
            for k in range(3):
                expect(page.locator(f"#queues tbody tr[data-queue='jobs--{k}'][data-node='{k}']")).to_be_visible(
                    timeout=WAIT_MS)
            node2 = page.locator("#queues tbody tr[data-queue='jobs--2'][data-node='2']")
            expect(node2.locator("[data-field='ready']")).to_have_text("2")
            expect(page.locator("#total-nodes")).to_have_text("3 of 3 up")
            node2.get_by_role("button", name="Delete queue jobs--2").click()
            page.get_by_role("alertdialog").get_by_role("button", name="Delete queue").click()
            expect(page.locator("#notice")).to_have_text("Deleted queue jobs--2 and its 2 message(s).",
                                                         timeout=WAIT_MS)
            assert http_call(f"http://127.0.0.1:{port + 3}", "GET", "/queues/jobs--2")[0] == 404
            subprocess.run([cluster, "kill", work, "1"], env=env, check=True, stdout=subprocess.DEVNULL)
            expect(page.locator("#total-nodes")).to_have_text("2 of 3 up", timeout=WAIT_MS)
            expect(page.get_by_role("list", name="Nodes")).to_contain_text("node 1: unreachable")
            expect(page.locator("#queues tbody tr[data-queue='jobs--0']")).to_be_visible()
        finally:
            context.close()
    finally:
        subprocess.run([cluster, "down", work], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


TESTS = [
    test_every_figure_refreshes_without_reload,
    test_rates_and_depth_chart_update,
    test_dead_letters_redrive_with_confirmation,
    test_settings_with_confirmation,
    test_delete_with_confirmation_and_create,
    test_every_control_has_an_accessible_name,
    test_auth_token_sign_in,
    test_cluster_shows_every_node,
    test_cluster_behind_haproxy,
]


def screenshot(browser, path):
    """A console with some history, for the README."""
    broker = Broker()
    try:
        broker.ok("PUT", "/queues/emails", {"ttl_ms": 60000, "max_deliveries": 5})
        broker.ok("PUT", "/queues/thumbnails", {"ttl_ms": 30000})
        make_dead_letters(broker, "webhooks", 3)
        context, page = open_console(browser, broker.url)
        for step in range(24):
            broker.publish("thumbnails", *[f"img-{step}-{i}.png" for i in range(20 + 3 * step)])
            broker.publish("emails", *[f"mail {step}-{i}" for i in range(8)])
            taken = broker.ok("GET", "/queues/thumbnails/fetch?max=18")["messages"]
            broker.ok("POST", "/queues/thumbnails/acknowledge", {"ids": [m["id"] for m in taken[:14]]})
            taken = broker.ok("GET", "/queues/emails/fetch?max=9")["messages"]
            broker.ok("POST", "/queues/emails/acknowledge", {"ids": [m["id"] for m in taken[:7]]})
            page.wait_for_timeout(1000)
        page.screenshot(path=path, full_page=True)
        context.close()
    finally:
        broker.stop()


def main():
    global BINARY
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    BINARY = sys.argv[1]
    shot = sys.argv[sys.argv.index("--screenshot") + 1] if "--screenshot" in sys.argv else None
    passed = failed = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            if shot:
                screenshot(browser, shot)
                print(f"screenshot written to {shot}")
                return 0
            only = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else ""
            for test in [t for t in TESTS if only in t.__name__]:
                broker = Broker()
                started = time.monotonic()
                try:
                    test(browser, broker)
                    passed += 1
                    print(f"ok   {test.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
                except Exception:  # report every test, then fail the run
                    failed += 1
                    print(f"FAIL {test.__name__}", flush=True)
                    traceback.print_exc()
                finally:
                    broker.stop()
        finally:
            browser.close()
    print(f"console: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
