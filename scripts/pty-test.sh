#!/usr/bin/env bash
# The command line as a person at a terminal meets it: each command runs in
# a pseudo-terminal (Python's pty module), against a real server on a
# loopback port. Checks the password prompt of `login`, the progress bar of
# `put`, Ctrl-C stopping a running `sync` cleanly (its folder free for the
# next), and the questions `trash empty` and `admin user delete --now` ask
# before anything is removed. Prints "pty: N passed, N failed"; non-zero
# on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build -p tessera --quiet
BIN=$TARGET/debug/tessera

WORK=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
PASSWORD=pty-test-$RANDOM$RANDOM
TESSERA_ADMIN_PASSWORD=$PASSWORD TESSERA_LOG=warn \
  "$BIN" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
  curl -sf "$URL/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

BIN=$BIN URL=$URL PASSWORD=$PASSWORD WORK=$WORK python3 - <<'EOF'
import os, pty, select, signal, subprocess, sys, termios, time

BIN, URL, PASSWORD, WORK = (os.environ[k] for k in ("BIN", "URL", "PASSWORD", "WORK"))
ENV = dict(os.environ, TESSERA_CONFIG_DIR=f"{WORK}/cfg", TESSERA_LOG="warn", COLUMNS="100")
passed = failed = 0

def check(name, ok, seen=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {name}")
    else:
        failed += 1
        print(f"FAILED: {name}")
        if seen:
            print("--- the terminal showed ---")
            print(seen[-2000:])

class Term:
    """One command in a pseudo-terminal, read as the screen shows it."""
    def __init__(self, *args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(BIN, [BIN, *args], ENV)
        self.seen = ""
        self.status = None

    def read(self, timeout):
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            return None
        if not data:
            return None
        self.seen += data.decode("utf-8", "replace")
        return True

    def expect(self, text, timeout=20):
        end = time.time() + timeout
        while text not in self.seen:
            left = end - time.time()
            if left <= 0 or self.read(left) is None:
                return False
        return True

    def send(self, text):
        os.write(self.fd, text.encode())

    def echo_off(self, timeout=20):
        """Waits until the program has turned echo off: it prints its
        prompt a moment before, and typing in between would show."""
        end = time.time() + timeout
        while time.time() < end:
            if not termios.tcgetattr(self.fd)[3] & termios.ECHO:
                return True
            time.sleep(0.01)
        return False

    def wait(self, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                while self.read(0.1):
                    pass
                return self.status
            self.read(0.1)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return None

def quiet(*args):
    return subprocess.run([BIN, *args], env=ENV, capture_output=True, text=True)

# The password is asked on the terminal, and not echoed.
t = Term("login", "--server", URL, "--user", "admin")
check("login asks for the password", t.expect("Password for admin at") and t.echo_off(), t.seen)
t.send(PASSWORD + "\n")
check("login with the typed password succeeds", t.expect("Logged in") and t.wait() == 0, t.seen)
check("the password is not echoed", PASSWORD not in t.seen, t.seen)

# A transfer shows one progress bar while it runs, then its summary.
big = f"{WORK}/big.bin"
with open(big, "wb") as f:
    f.write(os.urandom(96 << 20))
t = Term("put", big, "/big.bin")
done = t.wait(120) == 0
check("put of 96 MiB succeeds at a terminal", done, t.seen)
check("put draws a progress bar with the size", "put " in t.seen and "96.00 MiB" in t.seen, t.seen)
check("put ends with its summary", "/big.bin rev 1" in t.seen, t.seen)

# Ctrl-C stops a running sync cleanly: it says so, exits, and the folder
# is free for the next sync.
folder = f"{WORK}/A"
os.makedirs(folder)
with open(f"{folder}/note.txt", "w") as f:
    f.write("hello")
t = Term("sync", folder)
check("sync says how to stop it", t.expect("Ctrl-C to stop"), t.seen)
time.sleep(1)
t.send("\x03")
code = t.wait(30)
check("Ctrl-C stops the sync and it exits cleanly", code == 0, t.seen + f"\n(exit {code})")
again = quiet("sync", folder, "--once")
check("the folder is free for the next sync", again.returncode == 0, again.stdout + again.stderr)

# The trash is emptied only when the person says yes.
quiet("rm", "/big.bin")
t = Term("trash", "empty")
check("trash empty asks first", t.expect("[y/N]"), t.seen)
t.send("n\n")
check("a no removes nothing", t.wait() != 0 and "/big.bin" in quiet("trash").stdout, t.seen)
# What is deleted while the question is on screen (another device, say)
# was not asked about, and stays.
late = f"{WORK}/late.txt"
with open(late, "w") as f:
    f.write("deleted while the question was asked")
quiet("put", late, "/late.txt")
t = Term("trash", "empty")
t.expect("[y/N]")
quiet("rm", "/late.txt")
t.send("y\n")
code = t.wait()
left = quiet("trash").stdout
check("a yes empties what it asked about", code == 0 and "/big.bin" not in left, t.seen + left)
check("what was deleted meanwhile stays, and it says so",
      "/late.txt" in left and "1 item deleted since then stays" in t.seen, t.seen + left)

# Purging an account asks for its name.
add = subprocess.run([BIN, "admin", "user", "add", "erin", "--password-stdin"], env=ENV,
                     input="erin-secret-1\n", capture_output=True, text=True)
check("an account is added", add.returncode == 0, add.stdout + add.stderr)
t = Term("admin", "user", "delete", "erin", "--now")
check("a purge asks for the name", t.expect("Type the name to confirm"), t.seen)
t.send("not-erin\n")
check("the wrong name purges nothing", t.wait() != 0 and "erin" in quiet("admin", "user", "list").stdout, t.seen)
t = Term("admin", "user", "delete", "erin", "--now")
t.expect("Type the name to confirm")
t.send("erin\n")
check("the right name purges", t.wait() == 0 and "erin" not in quiet("admin", "user", "list").stdout, t.seen)

print(f"pty: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF
