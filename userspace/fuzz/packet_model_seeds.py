#!/usr/bin/env python3
"""Writes the seed inputs of the packet_model fuzz target into
corpus/packet_model/ (run from userspace/fuzz; rerun it after changing the
target's `Input` types, whose field order this mirrors).

The target decodes its bytes with the `arbitrary` crate (1.x), whose format
is simple enough to write by hand: fields in declaration order; a bool is the
low bit of one byte; an integer is its little-endian bytes; an enum variant
is a little-endian u32 v, variant (v * count) >> 32; an Option is a bool then
the value; a Vec is each element preceded by a true byte, then a false byte.
`PACKET_MODEL_DEBUG=1 target/x86_64-unknown-linux-gnu/release/packet_model
FILE` prints the policy and the explanations an input stands for.
"""
import ipaddress
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus', 'packet_model')
def b(x): return bytes([1 if x else 0])
def u8(x): return bytes([x])
def u16(x): return struct.pack('<H', x)
def u32(x): return struct.pack('<I', x)
def u128(x): return x.to_bytes(16, 'little')
def variant(i, n): return u32(((2*i+1) << 32) // (2*n))
def vec(items): return b''.join(b(1)+it for it in items) + b(0)
def opt(x): return b(0) if x is None else b(1)+x
V4=[(10,64,0,5),(10,64,1,9),(10,65,0,1),(10,64,0,1),(192,0,2,200),(192,0,2,20),(100,127,0,123),(203,0,113,10)]
V4L=[0,8,10,16,23,24,25,32]
V6L=[0,16,32,48,64,120,127,128]
def net(v6, host, length, bare=False):
    host = host - 8 if v6 and host >= 8 else host
    L = V6L if v6 else V4L
    return b(v6)+u8(host)+u8(L.index(length) + (128 if bare else 0))
def t_net(*a, **k): return variant(0,5)+net(*a, **k)
def t_list(i): return variant(1,5)+u8(i)
T_ANY=variant(2,5); T_GW=variant(3,5); T_NTP=variant(4,5)
P_ANY=variant(0,6); P_TCP=variant(1,6); P_UDP=variant(2,6); P_ICMP=variant(3,6); P_ICMP6=variant(4,6)
def p_num(n): return variant(5,6)+u8(n)
PORTS=[0,22,53,123,443,1000,8883,65535]
def ports(*ranges): return vec([u8(PORTS.index(lo))+u8(PORTS.index(hi)) for lo,hi in ranges])
def rule(deny, to, proto, port_ranges=None, explicit_id=True):
    return b(deny)+vec(to)+proto+opt(None if port_ranges is None else ports(*port_ranges))+b(explicit_id)
def group(devices, default_allow, audit, rules):
    return vec(devices)+b(default_allow)+b(audit)+vec(rules)
def generated(unknown, ntp4, ntp6, lists, groups, split):
    return variant(1,2)+opt(None if unknown is None else b(unknown))+b(ntp4)+b(ntp6)+vec([vec(l) for l in lists])+vec(groups)+b(split)
EXAMPLES=variant(0,2)
def univ(host, tweak=0): return variant(0,3)+u8(host)+u8(tweak)
def v4(s): return variant(1,3)+u32(int(ipaddress.IPv4Address(s)))
def v6(s): return variant(2,3)+u128(int(ipaddress.IPv6Address(s)))
PROTOS=[6,17,1,58,47,0]
def packet(src, dst, proto, dport):
    pb = PROTOS.index(proto) if proto in PROTOS else proto
    assert pb < 192 or proto >= 192
    db = None if dport is None else u16(PORTS.index(dport) if dport in PORTS else dport)
    return src+dst+u8(pb)+opt(db)
def write(name, policy, packets):
    open(f'{OUT}/{name}','wb').write(policy+vec(packets))
# Universe host indices: v4 0..7 as V4, v6 8..13.
M4, M4B, CAM, GW4, LAB_HI, LAB_LO, NTP4, INGEST = range(8)
M6, M6B, GW6, NTP6, DOC6, DOC6B = range(8, 14)
# 1. The example policy: a meter to AWS IoT, to the gateway's DNS, to NTP,
#    laterally; a camera (audit); the quarantined meter; an unknown device.
write('examples', EXAMPLES, [
    packet(univ(M4), v4('13.112.0.1'), 6, 443),
    packet(univ(M4), v4('13.112.0.1'), 6, 8883),
    packet(univ(M4), univ(GW4), 17, 53),
    packet(univ(M4), univ(NTP4), 17, 123),
    packet(univ(M4), univ(M4B), 6, 22),
    packet(univ(M6), univ(DOC6), 6, 443),
    packet(univ(CAM), univ(INGEST), 6, 443),
    packet(univ(CAM), univ(LAB_HI), 6, 443),
    packet(v4('10.64.13.37'), v4('198.51.100.20'), 6, 443),
    packet(v4('10.64.13.37'), univ(NTP4), 17, 123),
    packet(v4('192.168.1.1'), univ(NTP4), 17, 123),
    packet(univ(M4), univ(INGEST), 17, None),
])
# 2. Every tie-break: /25 over /24, udp over any, narrow ports over wide,
#    deny over allow, explicit over the built-in NTP allow; audit; a list.
write('tie-breaks', generated(False, True, False,
    [[net(False, LAB_HI, 24), net(False, INGEST, 24)]],
    [group([net(False, M4, 16), net(False, M4, 32, bare=True)], False, False, [
        rule(False, [t_list(0)], P_ANY),
        rule(True, [t_net(False, LAB_HI, 25)], P_ANY),
        rule(False, [t_net(False, INGEST, 24)], P_UDP),
        rule(True, [t_net(False, INGEST, 24)], P_ANY),
        rule(False, [t_net(False, INGEST, 32)], P_TCP, [(0, 1000)]),
        rule(True, [t_net(False, INGEST, 32)], P_TCP, [(443, 443), (22, 53)]),
     ]),
     group([net(False, CAM, 16)], True, True, [
        rule(True, [T_NTP], P_UDP, [(123, 123)]),
        rule(True, [T_ANY], p_num(47)),
     ])], False), [
    packet(univ(M4B), univ(LAB_HI), 6, 443),
    packet(univ(M4B), univ(LAB_LO), 6, 443),
    packet(univ(M4B), univ(INGEST, 1), 17, 1000),
    packet(univ(M4B), univ(INGEST, 1), 6, 1000),
    packet(univ(M4B), univ(INGEST), 6, 443),
    packet(univ(M4B), univ(INGEST), 6, 22),
    packet(univ(M4B), univ(INGEST), 6, None),
    packet(univ(M4), univ(NTP4), 17, 123),
    packet(univ(CAM), univ(NTP4), 17, 123),
    packet(univ(CAM), univ(INGEST), 47, None),
    packet(univ(CAM, 1), univ(LAB_HI), 1, None),
    packet(univ(NTP4), univ(M4), 6, 22),
])
# 3. IPv6 in two files: lists and groups apart; keywords gateway and ntp;
#    unknown devices allowed.
write('ipv6-split', generated(True, False, True,
    [[net(True, DOC6, 48), net(True, DOC6B, 64)], []],
    [group([net(True, M6, 48), net(True, M6B, 64)], False, False, [
        rule(False, [t_list(0), T_GW], P_TCP, [(443, 443), (8883, 8883)]),
        rule(True, [t_net(True, DOC6B, 64)], P_ANY),
        rule(False, [T_GW], P_UDP, [(53, 53)], explicit_id=False),
        rule(True, [T_ANY], P_ICMP6, explicit_id=False),
     ]),
     group([net(True, GW6, 128, bare=True)], True, False, [])], True), [
    packet(univ(M6B), univ(DOC6), 6, 443),
    packet(univ(M6B), univ(DOC6B), 6, 443),
    packet(univ(M6), univ(GW6), 17, 53),
    packet(univ(M6), univ(NTP6), 17, 123),
    packet(univ(M6), univ(DOC6), 58, None),
    packet(univ(GW6), univ(DOC6), 6, 8883),
    packet(v6('2001:db8::1'), univ(DOC6), 6, 443),
])
# 4. Nested device prefixes across groups, port ranges at the edges, a
#    protocol number, and the any-to-any rule.
write('nested-devices', generated(None, True, True, [],
    [group([net(False, M4, 8), net(True, M6, 16)], True, False, [
        rule(True, [T_ANY], P_TCP, [(0, 0), (65535, 65535), (1000, 65535)]),
        rule(False, [t_net(False, LAB_HI, 0)], P_ANY),
     ]),
     group([net(False, M4, 16), net(False, CAM, 16)], False, True, [
        rule(False, [t_net(False, LAB_HI, 23)], p_num(17), [(53, 123)]),
        rule(True, [t_net(False, LAB_HI, 23), t_net(False, NTP4, 10)], P_ICMP),
     ]),
     group([net(False, M4, 24)], False, False, [])], False), [
    packet(univ(M4), univ(LAB_HI), 6, 65535),
    packet(univ(M4, 0x80), univ(LAB_HI), 17, 100),
    packet(univ(M4B), univ(LAB_LO), 17, 53),
    packet(univ(CAM), univ(NTP4), 1, None),
    packet(v4('10.1.2.3'), univ(LAB_HI), 6, 0),
    packet(univ(M6), univ(NTP6), 17, 123),
])
