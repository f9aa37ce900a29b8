#!/usr/bin/env python3
"""The interop matrix: delegations between DM Servers written in different languages,
each in its own process, over HTTPS with mutual TLS, around one simulated device process
that both reach over SyncML DM. See interop/README.md for the agent contract.

    python3 interop/run.py --cli target/debug/dmdelegate \\
        --agent c=target/interop/agent_c \\
        --agent "python=target/python-venv/bin/python interop/agents/python/agent.py" \\
        --agent "kotlin=java -cp ... org.dmdelegate.interop.AgentKt"

Every implementation plays DMS-1 and DMS-2 against every other one (and itself) in each
case. Checks per run: both servers end in the case's states, and the device (read back
through its inspection endpoint) is exactly as the Rust CLI pair left it for completions
(same accounts, same ACL on every node), or byte for byte as before for failures.
Exit status 1 when any run fails; the logs of failed runs are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DMS1 = "dms1.operator.example"
DMS2 = "dms2.enterprise.example"
BOOT = "bootstrap.enterprise.example"
DEVICE = ("IMEI:490154203237518", "Acme", "Phone-X")  # no spaces: agent configs split on them
SUBTREES = {
    "full": [(".", "Get")],
    "partial": [("./Vendor/Apps", "Add,Get,Replace")],
}
# response, preparation, confirm, bootstrap_confirm, client_session (seconds)
TIMEOUTS = (10, 10, 15, 20, 20)
WAIT_S = 45
TERMINAL = {"Completed", "Rejected", "RolledBack", "RollbackFailed", "Expired"}
UNREACHABLE = "http://127.0.0.1:9/notify"  # nothing listens on the discard port


@dataclass(frozen=True)
class Case:
    """One scenario of the matrix."""

    name: str
    method: int
    kind: str
    expect: tuple[str, str]  # (DMS-1, DMS-2) final states
    refuser: str | None = None  # "dms1" or "dms2": its host refuses every offer
    dms2_device_unreachable: bool = False
    dms2_only: str | None = None  # restrict DMS-2 to this implementation (bootstrap)

    @property
    def completes(self) -> bool:
        return self.expect == ("Completed", "Completed")


CASES = [
    Case("m1-full", 1, "full", ("Completed", "Completed")),
    Case("m2-partial", 2, "partial", ("Completed", "Completed")),
    Case("m1-partial-dms2-cannot-reach-device", 1, "partial", ("RolledBack", "RolledBack"),
         dms2_device_unreachable=True),
    Case("m2-full-dms1-refuses", 2, "full", ("Rejected", "Rejected"), refuser="dms1"),
    # Methods 3/4 need DMS-2's Bootstrap Server: `dmdelegate serve` runs one.
    Case("m3-full", 3, "full", ("Completed", "Completed"), dms2_only="rust"),
    Case("m4-partial", 4, "partial", ("Completed", "Completed"), dms2_only="rust"),
]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port never handed out before in this run of the matrix: the kernel
    reuses a port as soon as it is closed, and two processes of one run must not get the
    same one."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def http_json(url: str, timeout: float = 5.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@dataclass
class Ports:
    listen: int = field(default_factory=free_port)
    hub: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)


@dataclass
class Side:
    """One server of a run: who implements it and how it is set up."""

    role: str  # "dms1" or "dms2"
    impl: str
    server_id: str
    ports: Ports
    peer_id: str
    peer_ports: Ports
    initiator: bool
    accept: bool
    notify_url: str
    secrets: tuple[str, str]  # this server's (client, server) secrets on the device
    account: bool  # hands out a DM account (DMS-2)
    bootstrap_port: int | None = None


class Process:
    """A child process with its output collected in the background."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, reads_stdin: bool = True) -> None:
        self.name = name
        self.reads_stdin = reads_stdin
        self.lines: list[str] = []
        self.log = log_dir / f"{name}.log"
        self._err = open(log_dir / f"{name}.stderr", "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            bufsize=1,
        )
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "w", encoding="utf-8") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float) -> str:
        """The first output line starting with `prefix` (raises on timeout or exit)."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name}: no `{prefix}` line after {timeout:.0f} s")
                if self.proc.poll() is not None and not any(ln.startswith(prefix) for ln in self.lines):
                    raise RuntimeError(f"{self.name}: exited with {self.proc.returncode} before `{prefix}`")
                self._cond.wait(min(left, 0.2))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Agents end when stdin closes; the CLI's processes by signal."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        if not self.reads_stdin:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()

    def dump_logs(self) -> str:
        out = self.log.read_text(encoding="utf-8") if self.log.exists() else ""
        err = (self.log.parent / f"{self.name}.stderr").read_text(encoding="utf-8")
        return f"--- {self.name} stdout\n{out}--- {self.name} stderr\n{err[-4000:]}"


class Matrix:
    def __init__(self, cli: str, agents: dict[str, list[str]], work: Path) -> None:
        self.cli = cli
        self.agents = agents
        self.work = work
        self.reference: dict[str, dict[str, object]] = {}
        subprocess.run(
            [cli, "certs", "--out", str(work), DMS1, DMS2, BOOT],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    # ---- configuration files ---------------------------------------------------------

    def agent_config(self, side: Side, case: Case, session_id: str, path: Path) -> None:
        w = self.work
        lines = [
            f"server_id {side.server_id}",
            f"listen 127.0.0.1:{side.ports.listen}",
            f"cert {w / (side.server_id + '.pem')}",
            f"key {w / (side.server_id + '.key')}",
            f"trust {w / 'ca.pem'}",
            f"peer {side.peer_id} https://{side.peer_id}:{side.peer_ports.listen}/dm-delegation "
            f"127.0.0.1:{side.peer_ports.listen}",
            f"hub 127.0.0.1:{side.ports.hub}",
            f"device {DEVICE[0]} {side.notify_url} {side.secrets[0]} {side.secrets[1]}",
            f"accept {'yes' if side.accept else 'no'}",
            "timeouts " + " ".join(str(t) for t in TIMEOUTS),
            f"session {session_id}",
            f"wait {WAIT_S}",
        ]
        if side.account:
            lines.append(f"account {side.secrets[0]} {side.secrets[1]}")
        if side.initiator:
            lines.append(f"delegate {side.peer_id} {case.method} {case.kind} {' '.join(DEVICE)}")
            lines += [f"subtree {uri} {rights}" for uri, rights in SUBTREES[case.kind]]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def node_config(self, side: Side, path: Path) -> None:
        """`dmdelegate serve`'s TOML for the same side."""
        w = self.work
        t = TIMEOUTS
        text = f"""server_id = "{side.server_id}"
listen = "127.0.0.1:{side.ports.listen}"
dm_listen = "127.0.0.1:{side.ports.hub}"
admin_listen = "127.0.0.1:{side.ports.admin}"
certificate = "{w / (side.server_id + '.pem')}"
private_key = "{w / (side.server_id + '.key')}"
trust = "{w / 'ca.pem'}"
accept = {'true' if side.accept else 'false'}

[timeouts]
response = {t[0]}
preparation = {t[1]}
confirm = {t[2]}
bootstrap_confirm = {t[3]}
client_session = {t[4]}

[[peers]]
server_id = "{side.peer_id}"
endpoint = "https://{side.peer_id}:{side.peer_ports.listen}/dm-delegation"
address = "127.0.0.1:{side.peer_ports.listen}"

[[devices]]
device_id = "{DEVICE[0]}"
manufacturer = "{DEVICE[1]}"
model = "{DEVICE[2]}"
notify_url = "{side.notify_url}"
client_secret = "{side.secrets[0]}"
server_secret = "{side.secrets[1]}"
"""
        if side.account:
            text += f'\n[account]\nclient_secret = "{side.secrets[0]}"\nserver_secret = "{side.secrets[1]}"\n'
        if side.bootstrap_port is not None:
            text += (
                f'\n[bootstrap]\nlisten = "127.0.0.1:{side.bootstrap_port}"\nhost = "{BOOT}"\n'
                f'certificate = "{w / (BOOT + ".pem")}"\nprivate_key = "{w / (BOOT + ".key")}"\n'
            )
        path.write_text(text, encoding="utf-8")

    def device_config(self, notify: int, hub1: int, boot: int, path: Path) -> None:
        path.write_text(
            f"""device_id = "{DEVICE[0]}"
manufacturer = "{DEVICE[1]}"
model = "{DEVICE[2]}"
listen = "127.0.0.1:{notify}"
bootstrap_trust = "{self.work / 'ca.pem'}"
resolve = [["{BOOT}", "127.0.0.1:{boot}"]]

[owner]
server_id = "{DMS1}"
url = "http://127.0.0.1:{hub1}/dm"
client_secret = "c1"
server_secret = "s1"
""",
            encoding="utf-8",
        )

    # ---- one run ---------------------------------------------------------------------

    def run(self, case: Case, impl1: str, impl2: str, n: int) -> tuple[bool, str, float]:
        """Runs `case` with DMS-1 in `impl1` and DMS-2 in `impl2`; (passed, detail, seconds)."""
        started = time.monotonic()
        run_dir = self.work / f"{n:03d}-{case.name}-{impl1}-{impl2}"
        run_dir.mkdir()
        session_id = f"interop-{n:03d}-{case.name[:20]}-{impl1}-{impl2}"
        p1, p2 = Ports(), Ports()
        notify, boot = free_port(), free_port()
        notify_url = f"http://127.0.0.1:{notify}/notify"
        dms1_starts = case.method in (1, 3)
        sides = [
            Side("dms1", impl1, DMS1, p1, DMS2, p2, dms1_starts, case.refuser != "dms1",
                 notify_url, ("c1", "s1"), account=False),
            Side("dms2", impl2, DMS2, p2, DMS1, p1, not dms1_starts, case.refuser != "dms2",
                 UNREACHABLE if case.dms2_device_unreachable else notify_url, ("c2", "s2"),
                 account=True, bootstrap_port=boot if case.method in (3, 4) else None),
        ]
        procs: list[Process] = []
        try:
            self.device_config(notify, p1.hub, boot, run_dir / "device.toml")
            device = Process("device", [self.cli, "device", "--config", str(run_dir / "device.toml")], run_dir,
                             reads_stdin=False)
            procs.append(device)
            device.wait_for("device ", 20)
            state_url = f"http://127.0.0.1:{notify}/state"
            before = http_json(state_url)
            servers: dict[str, Process] = {}
            for side in sides:
                if side.impl == "rust":
                    cfg = run_dir / f"{side.role}.toml"
                    self.node_config(side, cfg)
                    argv = [self.cli, "serve", "--config", str(cfg)]
                else:
                    cfg = run_dir / f"{side.role}.conf"
                    self.agent_config(side, case, session_id, cfg)
                    argv = [*self.agents[side.impl], str(cfg)]
                servers[side.role] = Process(f"{side.role}-{side.impl}", argv, run_dir,
                                             reads_stdin=side.impl != "rust")
                procs.append(servers[side.role])
            for side in sides:
                servers[side.role].wait_for("READY" if side.impl != "rust" else side.server_id, 60)
            initiator = next(s for s in sides if s.initiator)
            delegate: subprocess.Popen[str] | None = None
            if initiator.impl == "rust":
                uri, rights = SUBTREES[case.kind][0]
                delegate = subprocess.Popen(
                    [self.cli, "delegate", "--admin", f"127.0.0.1:{initiator.ports.admin}",
                     "--peer", initiator.peer_id, "--method", str(case.method), "--type", case.kind,
                     "--device-id", DEVICE[0], "--manufacturer", DEVICE[1], "--model", DEVICE[2],
                     "--subtree", f"{uri}={rights}", "--session-id", session_id, "--wait", str(WAIT_S)],
                    stdout=open(run_dir / "delegate.log", "w", encoding="utf-8"),
                    stderr=subprocess.STDOUT,
                )
            else:
                servers[initiator.role].send("go")
            states = {side.role: self.result(side, servers[side.role], session_id) for side in sides}
            if delegate is not None:
                delegate.wait(timeout=WAIT_S + 10)
            after = http_json(state_url)
            problems = self.check(case, (states["dms1"], states["dms2"]), before, after, impl1, impl2)
            detail = f"{states['dms1'][0]}/{states['dms2'][0]}"
            if problems:
                logs = "\n".join(p.dump_logs() for p in procs)
                return False, detail + ": " + "; ".join(problems) + "\n" + logs, time.monotonic() - started
            return True, detail, time.monotonic() - started
        except Exception as e:  # noqa: BLE001 - any failure of a run is reported with its logs
            logs = "\n".join(p.dump_logs() for p in procs)
            return False, f"{type(e).__name__}: {e}\n{logs}", time.monotonic() - started
        finally:
            for p in reversed(procs):  # the servers, then the device
                p.stop()

    def result(self, side: Side, proc: Process, session_id: str) -> tuple[str, int]:
        """(state, reason code) of the session at this side, once terminal."""
        if side.impl != "rust":
            _, state, code = proc.wait_for("RESULT ", WAIT_S + 15).split()
            return state, int(code)
        end = time.monotonic() + WAIT_S + 15
        url = f"http://127.0.0.1:{side.ports.admin}/sessions/{session_id}"
        while True:
            try:
                info = http_json(url)
                assert isinstance(info, dict)
                if info["state"] in TERMINAL:
                    reason = info.get("reason") or {}
                    return str(info["state"]), int(reason.get("code", 0)) if reason else 0
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise
            if time.monotonic() > end:
                raise RuntimeError(f"{proc.name}: session {session_id} not ended")
            time.sleep(0.1)

    def check(
        self,
        case: Case,
        states: tuple[tuple[str, int], tuple[str, int]],
        before: object,
        after: object,
        impl1: str,
        impl2: str,
    ) -> list[str]:
        assert isinstance(before, dict) and isinstance(after, dict)
        problems = []
        got = (states[0][0], states[1][0])
        if got != case.expect:
            problems.append(f"states {got}, expected {case.expect} (reason codes {states[0][1]}, {states[1][1]})")
        if not case.completes:
            if after["dump"] != before["dump"]:
                problems.append("the device is not as it was before the delegation")
            return problems
        accounts = after["accounts"]
        if DMS2 not in accounts:
            problems.append(f"DMS-2 has no account on the device: {accounts}")
        if (DMS1 in accounts) == (case.kind == "full"):
            problems.append(f"DMS-1's account after a {case.kind} delegation: {accounts}")
        outcome = {"accounts": accounts, "acls": after["acls"]}
        reference = self.reference.get(case.name)
        if reference is None:
            if (impl1, impl2) == ("rust", "rust"):
                self.reference[case.name] = outcome
            else:
                problems.append("no reference (the rust/rust run of this case must come first)")
        elif outcome != reference:
            diff = [u for u in sorted(set(reference["acls"]) | set(after["acls"]))  # type: ignore[arg-type]
                    if reference["acls"].get(u) != after["acls"].get(u)]  # type: ignore[attr-defined]
            problems.append(f"device differs from the rust/rust run: accounts {accounts}, ACLs of {diff[:5]}")
        return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cli", required=True, help="the dmdelegate CLI binary")
    parser.add_argument("--agent", action="append", default=[], metavar="NAME=COMMAND",
                        help="an agent implementation and the command that runs it (CONFIG appended)")
    parser.add_argument("--case", action="append", default=[], help="run only these cases")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    agents = {}
    for spec in args.agent:
        name, _, command = spec.partition("=")
        agents[name] = shlex.split(command)
    impls = ["rust", *agents]
    cases = [c for c in CASES if not args.case or c.name in args.case]
    work = Path(tempfile.mkdtemp(prefix="dmdelegate-interop-"))
    matrix = Matrix(args.cli, agents, work)
    results = []
    failures = []
    n = 0
    for case in cases:
        pairs = [(a, b) for a in impls for b in impls if case.dms2_only in (None, b)]
        pairs.sort(key=lambda p: p != ("rust", "rust"))  # the reference run first
        for impl1, impl2 in pairs:
            n += 1
            ok, detail, seconds = matrix.run(case, impl1, impl2, n)
            first_line = detail.splitlines()[0] if detail else ""
            print(f"{'ok  ' if ok else 'FAIL'} {case.name:<38} DMS-1 {impl1:<7} DMS-2 {impl2:<7} "
                  f"{first_line} ({seconds:.1f} s)", flush=True)
            results.append({"case": case.name, "dms1": impl1, "dms2": impl2, "ok": ok,
                            "outcome": first_line, "seconds": round(seconds, 2)})
            if not ok:
                failures.append(detail)
    for detail in failures:
        print("\n" + detail, file=sys.stderr)
    passed = sum(r["ok"] for r in results)
    print(f"interop: {passed} of {len(results)} runs passed ({', '.join(impls)}; work dir {work})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if not failures and os.environ.get("INTEROP_KEEP") != "1":
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if not failures and results else 1


if __name__ == "__main__":
    sys.exit(main())
