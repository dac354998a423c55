//! Map names and capacities.
//!
//! Names are at most 15 bytes, the kernel's limit for object names; the same
//! names are used for the pins under [`PIN_DIR`].

/// Where the controller pins the program, links and maps (bpffs).
pub const PIN_DIR: &str = "/sys/fs/bpf/tollgate";

/// Program names (the entry-point function names in the BPF object). Each
/// hook has two variants: one for Ethernet links, which parses from the
/// EtherType, and one for raw-IP (L3) links such as tun, WireGuard, PPP,
/// IP tunnels and raw-IP modems, whose packets start at the IP header.
pub const PROG_XDP: &str = "tollgate_xdp";
pub const PROG_XDP_IP: &str = "tollgate_xdp_ip";
pub const PROG_TC: &str = "tollgate_tc";
pub const PROG_TC_IP: &str = "tollgate_tc_ip";
/// Every program, in the order the controller loads them.
pub const PROGRAMS: [&str; 4] = [PROG_XDP, PROG_XDP_IP, PROG_TC, PROG_TC_IP];

/// `Array<u32>` with one entry: the policy generation in force. Its low bit
/// is the slot the dataplane reads; each install writes the next generation.
pub const MAP_ACTIVE: &str = "TG_ACTIVE";
/// `Array<GroupInfo>` indexed by `slot * MAX_GROUPS + group`.
pub const MAP_GROUPS: &str = "TG_GROUPS";
/// `Array<TrieNode>` of buckets: exact device addresses (/32, /128) to
/// group ([`crate::device_table`]). Memory-mappable ([`crate::TRIE_MAP_FLAGS`]).
pub const MAP_DEVICE_EXACT: &str = "TG_DEV_EXACT";
/// `LpmTrie<DevicePrefix, u32>`: device prefixes to group, as the
/// controller wrote them (read back after a restart); packets walk the
/// device trie compiled from them ([`crate::classifier`]).
pub const MAP_DEVICE_PREFIX: &str = "TG_DEV_PREFIX";
/// `HashMap<DeviceKey, u8>`: the gateway's own addresses, per slot. IPv6
/// neighbour discovery addressed to them passes without a policy decision.
pub const MAP_GATEWAY: &str = "TG_GATEWAY";
/// `LpmTrie<Destination, u32>`: (group, destination prefix) to rule set,
/// as the controller wrote them (read back after a restart); packets walk
/// the group's trie compiled from them ([`crate::classifier`]).
pub const MAP_DESTINATIONS: &str = "TG_DST";
/// `Array<RuleRecord>`: rule lists, as chains of records. Each slot owns
/// half the records; indices stored in `TG_DST` and in `next` are absolute.
pub const MAP_RULESETS: &str = "TG_RULESETS";
/// `PerCpuArray<Counter>`: per-rule, per-default and per-verdict counters.
pub const MAP_COUNTERS: &str = "TG_COUNTERS";
/// `Array<u64>`: identity hash of what owns each counter index (userspace
/// bookkeeping that survives controller restarts with the pinned counters).
pub const MAP_COUNTER_OWNERS: &str = "TG_OWNERS";
/// `PerCpuArray<Counter>` indexed by [`crate::Stat`].
pub const MAP_STATS: &str = "TG_STATS";
/// `LruHashMap<FragmentKey, FragmentVerdict>`: allowed first fragments, per
/// policy generation, with the time they were seen.
pub const MAP_FRAGMENTS: &str = "TG_FRAGS";
/// `LruHashMap<SourceKey, FragmentQuota>`: how many first fragments each
/// source had remembered in the current lifetime window.
pub const MAP_FRAGMENT_SOURCES: &str = "TG_FRAG_SRC";
/// `HashMap<u16, u8>`: EtherTypes the operator passes on purpose
/// (`pass-ethertypes`); every other non-IP EtherType but ARP is dropped.
pub const MAP_PASS_ETHERTYPES: &str = "TG_ETHERTYPES";
/// `RingBuf` of [`crate::DenyEvent`].
pub const MAP_EVENTS: &str = "TG_EVENTS";
/// `PerCpuArray<RateBucket>` with one entry: the deny-event limiter's state.
pub const MAP_EVENT_LIMITER: &str = "TG_EVENT_BKT";
/// `PerCpuArray<RateBucket>` with one entry: the reject-reply limiter's
/// state.
pub const MAP_REJECT_LIMITER: &str = "TG_REJECT_BKT";
/// `PerCpuArray<RejectFacts>` with one entry: the rejected packet being
/// answered on this CPU (scratch space of one program run).
pub const MAP_REJECT_PACKET: &str = "TG_REJECT_PKT";
/// `PerCpuArray<[u8; REJECT_REPLY_BYTES]>` with one entry: where the answer
/// to a rejected packet is built (the BPF stack is too small for it).
pub const MAP_REJECT_REPLY: &str = "TG_REJECT_REPLY";
/// `ProgramArray`s with one entry each, [`PROG_REJECT_XDP`] and
/// [`PROG_REJECT_TC`]: the hooks tail-call the answerer of their type, so
/// the verifier checks it once rather than once for every path through the
/// decision.
pub const MAP_REJECT_XDP: &str = "TG_REJECT_XDP";
pub const MAP_REJECT_TC: &str = "TG_REJECT_TC";
/// The reject answerers, never attached: only tail-called.
pub const PROG_REJECT_XDP: &str = "tollgate_reject";
pub const PROG_REJECT_TC: &str = "tollgate_reject_tc";
/// The longest answer to a rejected packet: ICMPv6 quoting 48 bytes.
pub const REJECT_REPLY_BYTES: usize = 96;
/// `Array<Settings>` with one entry: runtime knobs set by the controller.
pub const MAP_SETTINGS: &str = "TG_SETTINGS";

/// `ArrayOfMaps` with one entry, never read by the program: updating it from
/// userspace returns only after an RCU grace period, i.e. after every program
/// run that could still read the previously active slot has finished.
pub const MAP_GRACE: &str = "TG_GRACE";

/// Number of policy slots (double buffering).
pub const SLOTS: u32 = 2;
/// Groups per slot, including the unknown-device pseudo-group 0.
pub const MAX_GROUPS: u32 = 4096;
/// Rules one destination prefix of one group can carry, inherited ones included.
pub const RULESET_ENTRIES: usize = 32;
/// Entries per rule record; a rule list longer than that chains records.
pub const RECORD_ENTRIES: usize = 8;
/// Records one rule list can chain (RULESET_ENTRIES / RECORD_ENTRIES).
pub const MAX_CHAIN: usize = RULESET_ENTRIES / RECORD_ENTRIES;
/// Gateway addresses (on the device-facing interfaces) per slot.
pub const MAX_GATEWAY_ADDRESSES: u32 = 256;
/// Entries of `pass-ethertypes`.
pub const MAX_PASS_ETHERTYPES: u32 = 64;
/// Sources whose fragment quota is tracked at once (least recently used go).
pub const FRAGMENT_SOURCES: u32 = 1 << 14;

/// Default capacities of the maps whose size the controller may override
/// (they are not used in index arithmetic). Per slot where noted. Sized for
/// a fleet of 100,000 explicit rules and 1,000,000 device addresses (issue
/// 14): rule records and counters with headroom for a reload that replaces
/// a third of the rules (counters: for one that replaces all of them, as
/// both slots hold counters); the README states the kernel memory.
pub const DEFAULT_DEVICE_EXACT_PER_SLOT: u32 = 1 << 20;
pub const DEFAULT_DEVICE_PREFIXES_PER_SLOT: u32 = 1 << 16;
pub const DEFAULT_DESTINATIONS_PER_SLOT: u32 = 1 << 18;
pub const DEFAULT_COUNTERS: u32 = 1 << 18;
pub const DEFAULT_RULE_RECORDS_PER_SLOT: u32 = 1 << 17;
pub const DEFAULT_FRAGMENTS: u32 = 1 << 14;
pub const EVENT_RING_BYTES: u32 = 1 << 18;
