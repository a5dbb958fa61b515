#!/usr/bin/env python3
"""Capture the CDBs and sense data real iSCSI tools exchange with tgtd.

Produces the golden vectors of trace/tests/cdb.rs. Not run by the test
suite (it needs tgtd and libiscsi-bin); run it by hand to refresh or extend
the vectors:

    python3 trace/tests/cdb_capture.py 'iscsi-inq {url}' 'iscsi-test-cu -t ALL.Read10.Simple {url}'

It starts tgtd on a free port with a 64 MiB backing file, relays one TCP
connection at a time through 127.0.0.1 (so the initiator's bytes are seen
exactly as sent), and prints for every SCSI Command PDU (RFC 7143 11.3) its
16-byte CDB field and for every SCSI Response (11.4) its status and sense
bytes (after the two-byte SenseLength). Digests are honoured if the login
negotiates them.
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Stream:
    """Splits one direction of an iSCSI connection into PDUs."""

    def __init__(self, name, state, out):
        self.name, self.state, self.out, self.buf = name, state, out, b""

    def feed(self, data):
        self.buf += data
        while True:
            hd = 4 if self.state.get("hd") else 0
            dd = 4 if self.state.get("dd") else 0
            if len(self.buf) < 48:
                return
            bhs = self.buf[:48]
            ahs = bhs[4] * 4
            dlen = int.from_bytes(bhs[5:8], "big")
            pad = (4 - dlen % 4) % 4
            total = 48 + ahs + hd + dlen + pad + (dd if dlen else 0)
            if len(self.buf) < total:
                return
            data = self.buf[48 + ahs + hd : 48 + ahs + hd + dlen]
            self.buf = self.buf[total:]
            self.pdu(bhs, data)

    def pdu(self, bhs, data):
        op = bhs[0] & 0x3F
        if op in (0x03, 0x23):  # login request / response: watch digests
            for kv in data.split(b"\0"):
                if kv == b"HeaderDigest=CRC32C" and op == 0x23:
                    self.state["hd_next"] = True
                if kv == b"DataDigest=CRC32C" and op == 0x23:
                    self.state["dd_next"] = True
            # Digests start after the final login response (T=1, NSG=3).
            if op == 0x23 and bhs[1] & 0x80 and bhs[1] & 0x03 == 0x03:
                self.state["hd"] = self.state.get("hd_next", False)
                self.state["dd"] = self.state.get("dd_next", False)
        elif op == 0x01:
            itt = bhs[16:20].hex()
            self.out["lines"].append(f"cmd itt={itt} cdb={bhs[32:48].hex(' ')}")
        elif op == 0x21:
            itt = bhs[16:20].hex()
            status = bhs[3]
            sense = b""
            if len(data) >= 2:
                n = int.from_bytes(data[:2], "big")
                sense = data[2 : 2 + n]
            self.out["lines"].append(f"rsp itt={itt} status={status:#04x} sense={sense.hex(' ')}")


def pump(src, dst, stream):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            stream.feed(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(listener, target_port, out):
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", target_port))
        state = {}
        a = threading.Thread(target=pump, args=(client, server, Stream("i", state, out)), daemon=True)
        b = threading.Thread(target=pump, args=(server, client, Stream("t", state, out)), daemon=True)
        a.start()
        b.start()


def main():
    tgt_port, ctl_port, relay_port = free_port(), 20000 + os.getpid() % 10000, free_port()
    iqn = "iqn.2026-11.scuzz.test:capture"
    backing = tempfile.NamedTemporaryFile(delete=False)
    backing.truncate(64 << 20)
    backing.close()
    tgtd = subprocess.Popen(
        ["tgtd", "-f", "-C", str(ctl_port), "--iscsi", f"portal=127.0.0.1:{tgt_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    adm = ["tgtadm", "-C", str(ctl_port), "--lld", "iscsi"]
    try:
        for _ in range(50):
            if subprocess.run(adm + ["--op", "show", "--mode", "target"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(adm + ["--op", "new", "--mode", "target", "--tid", "1", "-T", iqn], check=True)
        subprocess.run(
            adm + ["--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", backing.name],
            check=True,
        )
        subprocess.run(adm + ["--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"], check=True)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", relay_port))
        listener.listen(4)
        url = f"iscsi://127.0.0.1:{relay_port}/{iqn}/1"
        out = {"lines": []}
        threading.Thread(target=relay, args=(listener, tgt_port, out), daemon=True).start()
        for cmd in sys.argv[1:]:
            out["lines"] = []
            line = cmd.format(url=url)
            subprocess.run(line, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            time.sleep(0.3)
            print(f"### {cmd}")
            for entry in out["lines"]:
                print(entry)
        listener.close()
    finally:
        subprocess.run(["tgtadm", "-C", str(ctl_port), "--op", "delete", "--mode", "system"], capture_output=True)
        try:
            tgtd.wait(timeout=5)
        except subprocess.TimeoutExpired:
            tgtd.kill()
        os.unlink(backing.name)


if __name__ == "__main__":
    main()
