#!/usr/bin/env python3
"""Takes docs/dashboard.png: the dashboard during `switchyard demo
--scenario canary-rollback`, just after the guard rolled green back.

Drives headless Chromium over the DevTools protocol on a pipe (no extra
packages): the page is opened while the scenario runs, and the shot is
taken the moment /history shows the guard's rollback (the demo ends a
second later). Usage: docs/dashboard-screenshot.py [BINARY] [OUT.png]
"""
import base64, fcntl, json, os, subprocess, sys, tempfile, time, urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/switchyard"
OUT = sys.argv[2] if len(sys.argv) > 2 else "docs/dashboard.png"
LISTEN, ADMIN = "127.0.0.1:18480", "127.0.0.1:18491"


class Browser:
    def __init__(self):
        # Chromium reads commands on fd 3 and answers on fd 4.
        to_browser, self.w = os.pipe()
        self.r, from_browser = os.pipe()
        to_browser = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 100)
        from_browser = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 100)
        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tempfile.mkdtemp()}",
             "--remote-debugging-pipe"],
            pass_fds=(3, 4),
            preexec_fn=lambda: (os.dup2(to_browser, 3), os.dup2(from_browser, 4)),
            stderr=subprocess.DEVNULL)
        self.n, self.buf, self.session = 0, b"", None

    def call(self, method, **params):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                self.buf += os.read(self.r, 1 << 20)
            line, self.buf = self.buf.split(b"\0", 1)
            answer = json.loads(line)
            if answer.get("id") == self.n:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]


demo = subprocess.Popen([BIN, "demo", "--scenario", "canary-rollback",
                         "--listen", LISTEN, "--admin-http", ADMIN])
browser = Browser()
try:
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://{ADMIN}/ready", timeout=2).read()
            break
        except Exception:
            time.sleep(0.2)
    target = browser.call("Target.createTarget", url=f"http://{ADMIN}/")["targetId"]
    browser.session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                 deviceScaleFactor=1, mobile=False)

    def page_says(text):
        script = "document.body ? document.body.innerText : ''"
        value = browser.call("Runtime.evaluate", expression=script)["result"].get("value", "")
        return text in value

    # The page shows the guard's rollback in its history (it polls every 1 s).
    deadline = time.time() + 60
    while time.time() < deadline and not page_says("rollback (guard"):
        time.sleep(0.1)
    shot = browser.call("Page.captureScreenshot", format="png")["data"]
    with open(OUT, "wb") as f:
        f.write(base64.b64decode(shot))
    print(f"wrote {OUT}")
finally:
    browser.proc.kill()
    demo.wait(timeout=60)
