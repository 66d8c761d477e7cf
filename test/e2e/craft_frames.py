#!/usr/bin/env python3
"""Sends malformed and stray TCP frames out of one interface, as if mirrored.

usage: craft_frames.py IFACE DST_MAC SRC_MAC CLIENT_IP VIP PORT COUNT

Each frame passes the capture's BPF filter (tcp, host VIP, port PORT) and is
wrong in exactly one way, so each lands in one counter of t2cp (a parse
counter but for the fragment, which reassembly refuses):
  truncated_ip     IPv4 total length larger than the frame
  bad_ip_checksum  IPv4 header checksum wrong
  ip_fragment      more-fragments bit set, on a payload that is not a multiple
                   of 8 bytes (no fragment but the last can be)
  bad_tcp_header   TCP data offset beyond the segment
  bad_tcp_options  a TCP option of length 0
plus 'mid_stream': a well-formed ACK for a flow never seen open (unprotected).
Addresses come from the caller (the testbed's 198.18.0.0/15 range only).
"""
import socket
import struct
import sys


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: bytes, dst: bytes, payload: bytes, *, total=None, frag=0x4000, good_csum=True, ident=1) -> bytes:
    tot = total if total is not None else 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot, ident, frag, 64, 6, 0, src, dst)
    c = csum(hdr) if good_csum else (csum(hdr) ^ 0x5A5A)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def tcp(src: bytes, dst: bytes, sport: int, dport: int, *, flags=0x10, doff=5, options=b"", data=b"", seq=1000, ack=2000) -> bytes:
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, 502, 0, 0) + options
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, 6, len(hdr) + len(data))
    c = csum(pseudo + hdr + data)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + data


def main() -> None:
    iface, dst_mac, src_mac, client, vip, port, count = sys.argv[1:8]
    port, count = int(port), int(count)
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    c, v = socket.inet_aton(client), socket.inet_aton(vip)
    sport = 61000
    good = tcp(c, v, sport, port, data=b"x" * 40)
    frames = {
        "truncated_ip": ipv4(c, v, good, total=20 + len(good) + 100),
        "bad_ip_checksum": ipv4(c, v, good, good_csum=False),
        "ip_fragment": ipv4(c, v, good, frag=0x2000),
        "bad_tcp_header": ipv4(c, v, tcp(c, v, sport, port, doff=15)),
        "bad_tcp_options": ipv4(c, v, tcp(c, v, sport, port, doff=6, options=b"\x02\x00\x00\x00")),
        "mid_stream": ipv4(c, v, tcp(c, v, sport + 1, port, data=b"y" * 10)),
    }
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for _ in range(count):
        for f in frames.values():
            s.send(eth + f)
    print(" ".join(frames))


if __name__ == "__main__":
    main()
