//! The precedence: what decides a packet's fate, in order. Written here once.
//!
//! The language reference (`policies/README.md`, "Verdict semantics") says
//! the same for policy authors, under the same numbers. The code that
//! implements a step carries a comment of the form `// step N: what`: the
//! kernel (`ebpf/program/src/main.rs` and `decide.rs`), the compiler
//! (`userspace/src/compile.rs`), the model that evaluates the compiled
//! tables as the kernel does (`userspace/src/model.rs`) and the naive
//! evaluator of the language (`userspace/src/model/naive.rs`). A unit test
//! (`userspace/src/model/precedence_tags.rs`) holds those tags to this list.
//!
//! For a packet from S to D, protocol P, destination port X (unknown for
//! protocols other than TCP and UDP, and for later fragments). Every lookup
//! reads the tables of one policy generation, `TG_ACTIVE` read once.
//!
//! # Before the policy
//!
//! The kernel alone; audit mode does not soften these.
//!
//! 1. **Fail closed.** A frame the parser cannot vouch for is dropped, each
//!    cause on its own `Stat`: truncated or inconsistent headers, a third
//!    VLAN tag, an IPv4 source route, IPv6 to an IPv4-mapped address, an
//!    over-long IPv6 extension chain, a routing header with segments left, a
//!    first fragment without its whole transport header, a TCP fragment at
//!    offset 8; and a non-IP frame that step 2 does not pass.
//! 2. **Passed without a verdict.** ARP; an EtherType listed in
//!    `pass-ethertypes` (`TG_ETHERTYPES`); IPv6 router or neighbour
//!    solicitation or advertisement with hop limit 255 to a link-local or
//!    link-scope multicast address or to a gateway address (`TG_GATEWAY`).
//! 3. **Remembered allow.** A later fragment whose first fragment was allowed
//!    under the same generation less than the fragment lifetime ago
//!    (`TG_FRAGS`) is allowed and charged as that fragment was. Only allows
//!    are remembered, so a device cannot flush the cache with datagrams it
//!    is denied. Otherwise a later fragment goes on with its port unknown.
//!    Every other packet takes steps 4-12: there is no flow cache (the
//!    decision costs what a cache hit did, BENCHMARKS.md).
//!
//! # The policy
//!
//! The compiler lays the policy out so that the kernel's lookups give these
//! answers; the model and the naive evaluator compute them too.
//!
//! 4. **Group.** The group whose devices contain S most specifically: the
//!    exact address (`TG_DEV_EXACT`), else the longest device prefix (the
//!    slot's device trie in `TG_TRIE`, compiled from `TG_DEV_PREFIX`).
//! 5. **Unknown device.** No group: the policy's `unknown-devices` decides
//!    (the default of group 0), and steps 6-12 do not apply: no rule, no
//!    built-in NTP allow, no audit mode, no learned address.
//! 6. **Destination.** The candidates are the group's rules whose `to`
//!    contains D, each at its longest prefix containing D. The kernel walks
//!    the group's destination trie (`TG_TRIE`, compiled from `TG_DST`) to
//!    the longest destination prefix containing D: its rule list holds the rules of that prefix and of every less specific
//!    one, resolved by the compiler.
//! 7. **Protocol and port.** A candidate's `proto` is any or P, and its
//!    `ports` are absent or contain X (an unknown X never matches `ports`);
//!    it counts with its narrowest `ports` item containing X.
//! 8. **Built-in NTP allow.** Each group allows UDP/123 to each NTP address,
//!    as a rule at full prefix length (`RULE_BUILTIN`), competing in step 9
//!    like any rule.
//! 9. **Winner.** The longest destination prefix; then a specific `proto`
//!    over any; then the narrowest port range (one port: 1, `lo-hi`:
//!    hi-lo+1, no `ports`: 65536); then deny over reject over allow (the
//!    quieter refusal wins). What is still tied
//!    has one verdict, and only the counted rule remains to choose: an
//!    explicit rule over the built-in, then the first in the file. The
//!    compiler sorts each rule list in this order, so the first entry that
//!    passes step 7 is the winner.
//! 10. **Default.** No candidate: the group's `default` (allow, deny or
//!     reject; `unknown-devices` is allow or deny, never reject).
//! 11. **Audit.** In a group in audit mode (`GROUP_AUDIT`) a deny or a
//!     reject becomes audit-deny: counted and reported, and the packet
//!     passes.
//! 12. **Learned destination.** Where step 10 decided (no candidate), an
//!     address the gateway's DNS forwarder learned for one of the group's
//!     FQDN rules (`TG_LEARNED`, per slot and group) allows the packet
//!     instead, charged to that rule, if the entry has not expired (the
//!     answer's TTL clamped to `dns.min-ttl`..`dns.max-ttl`, plus a grace
//!     period) and the rule's `proto` and `ports` match P and X as in step
//!     7. A candidate always wins over a learned address, so an explicit
//!     deny or reject rule that matches the packet is never overridden.
//!     Besides, the controller never learns (nor writes into a slot) an
//!     address that a deny or reject rule of the group contains, whatever
//!     that rule's `proto` and `ports`, an address of the gateway, or an
//!     address in any group's `devices`: a name rebound to the gateway, a
//!     neighbour or a denied range stays denied.
//!
//! # After the policy
//!
//! The kernel alone (`ebpf/program/src/reject/`), after the verdict is
//! counted as the policy decided it; not a step, since it changes no
//! verdict. A reject is dropped like a deny, and the device gets an answer
//! (TCP: a RST; other IPv4: ICMP destination unreachable, code 13; other
//! IPv6: ICMPv6 destination unreachable, code 1) unless the packet could be
//! a spoofed reflection or has nothing to answer (ICMP of the packet's own
//! family other than an echo request, a TCP RST, multicast or broadcast at L2 or
//! L3, a later fragment, IPv4 options or IPv6 extension headers under an ICMP
//! answer: `RejectUnanswered`), or this CPU is over its reply rate (`RejectLimited`:
//! the reject degrades to a deny).
//!
//! Likewise after the policy, and changing no verdict: an allowed UDP
//! datagram from a device in a group to an `ntp.listen` address and port may
//! be answered by the program itself instead of passing to the NTP server
//! (`ebpf/program/src/ntp.rs`, XDP only); it is counted as the allow it is.
