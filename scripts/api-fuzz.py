#!/usr/bin/env python3
"""API fuzzing: schemathesis against a real kithd, from its own /v1/openapi.json.

Starts kithd on a free loopback port with a fresh data folder, registers two accounts with the
real `kith` client (so requests carry a valid bearer token and there is a real conversation),
then runs schemathesis with every check that concerns the server's answers. Fails unless at
least --min-requests requests were made, none was answered 5xx and every answer matches the
document (status, content type, headers, body schema).

    scripts/api-fuzz.py                      # the full run (see docs/testing.md)
    scripts/api-fuzz.py --max-examples 15    # the bounded run .ci/run makes
"""

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])


def start_kithd(kithd: Path, data: Path) -> tuple[subprocess.Popen, str]:
    config = data / "kithd.toml"
    # Generous abuse thresholds: the fuzzer sends far faster than a person, and a run that is
    # mostly 429 tests little. The limits themselves are tested elsewhere.
    config.write_text(
        "[safety]\nmax_messages_per_minute = 1000000\nregistrations_per_ip_per_hour = 1000000\n"
    )
    log = open(data / "kithd.log", "w")
    proc = subprocess.Popen(
        [str(kithd), "serve", "--listen", "127.0.0.1:0", "--data", str(data / "store"),
         "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "KITHD_LOG": "info"},
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        match = re.search(r"addr=(\S+)", (data / "kithd.log").read_text())
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            sys.exit("kithd exited: " + (data / "kithd.log").read_text())
        time.sleep(0.05)
    proc.kill()
    sys.exit("kithd did not start")


def kith(kith_bin: Path, profile: Path, *args: str) -> None:
    subprocess.run([str(kith_bin), "--profile", str(profile), *args], check=True,
                   stdout=subprocess.DEVNULL)


def bearer(profile: Path) -> str:
    db = sqlite3.connect(profile / "kith.db")
    device, token = db.execute("SELECT device_id, token FROM kith_profile").fetchone()
    db.close()
    return f"Bearer {device}:{token}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=120,
                        help="test cases per operation and phase (default 120)")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--min-requests", type=int, default=1000)
    parser.add_argument("--kithd", type=Path, default=ROOT / "target/debug/kithd")
    parser.add_argument("--kith", type=Path, default=ROOT / "target/debug/kith")
    parser.add_argument("--report", type=Path, help="keep schemathesis' reports here")
    args = parser.parse_args()
    for binary in (args.kithd, args.kith):
        if not binary.exists():
            sys.exit(f"{binary} is missing: cargo build -p kith-server -p kith-cli")

    with tempfile.TemporaryDirectory(prefix="kith-api-fuzz-") as tmp:
        data = Path(tmp)
        proc, addr = start_kithd(args.kithd, data)
        try:
            url = f"http://{addr}"
            alice, bob = data / "alice", data / "bob"
            kith(args.kith, alice, "register", "alice", "--server", url)
            kith(args.kith, bob, "register", "bob", "--server", url)
            kith(args.kith, alice, "send", "bob", "hello")
            reports = args.report or data / "reports"
            ndjson = reports / "events.ndjson"
            cmd = [
                "st", "run", f"{url}/v1/openapi.json",
                "--header", f"Authorization: {bearer(alice)}",
                "--checks", CHECKS,
                # Rotating the token would lock the run out of every other operation; the
                # rotation has its own end-to-end tests.
                "--exclude-path", "/v1/me/token",
                "--max-examples", str(args.max_examples),
                "--seed", str(args.seed),
                "--generation-deterministic",
                "--workers", "1",
                "--request-timeout", "10",
                "--no-color",
                "--report", "ndjson,junit",
                "--report-dir", str(reports),
                "--report-ndjson-path", str(ndjson),
            ]
            started = time.time()
            run = subprocess.run(cmd)
            took = time.time() - started
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        requests, statuses = count_requests(ndjson)
        server_errors = sum(n for s, n in statuses.items() if s >= 500)
        print(f"\napi-fuzz: {requests} requests in {took:.0f} s; status counts "
              f"{dict(sorted(statuses.items()))}; {server_errors} answered 5xx; "
              f"schemathesis exit code {run.returncode}")
        if server_errors or run.returncode != 0:
            print("api-fuzz: FAILED (see the schemathesis output above)")
            return 1
        if requests < args.min_requests:
            print(f"api-fuzz: FAILED: only {requests} requests, fewer than {args.min_requests}")
            return 1
        print("api-fuzz: passed")
        return 0


def count_requests(ndjson: Path) -> tuple[int, dict[int, int]]:
    """Every response schemathesis recorded, by status."""
    statuses: dict[int, int] = {}
    if not ndjson.exists():
        return 0, statuses

    def walk(node):
        if isinstance(node, dict):
            response = node.get("response")
            if isinstance(response, dict) and isinstance(response.get("status_code"), int):
                code = response["status_code"]
                statuses[code] = statuses.get(code, 0) + 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for line in ndjson.read_text().splitlines():
        if line.strip():
            walk(json.loads(line))
    return sum(statuses.values()), statuses


if __name__ == "__main__":
    sys.exit(main())
