//! Map definitions. Layouts and names come from `tollgate-common`; the sizes
//! given here are defaults that the controller may override at load time for
//! maps not used in index arithmetic (see `config::Limits`).

use aya_ebpf::{
    btf_maps::{
        Array, ArrayOfMaps, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf,
    },
    macros::btf_map,
};
use tollgate_common::{
    Counter, DEFAULT_COUNTERS, DEFAULT_DESTINATIONS_PER_SLOT, DEFAULT_DEVICE_EXACT_PER_SLOT,
    DEFAULT_DEVICE_PREFIXES_PER_SLOT, DEFAULT_FRAGMENTS, DEFAULT_RULE_RECORDS_PER_SLOT, DenyEvent,
    Destination, DeviceKey, DevicePrefix, EVENT_RING_BYTES, FRAGMENT_SOURCES, FragmentKey,
    FragmentQuota, FragmentVerdict, GroupInfo, MAX_GATEWAY_ADDRESSES, MAX_GROUPS,
    MAX_NTP_ADDRESSES, MAX_NTP_INTERFACES, MAX_PASS_ETHERTYPES, NTP_PORT_WORDS, NTP_RATE_SOURCES,
    NTP_SAMPLE_RING_BYTES, NtpAddrKey, NtpFastState, NtpSample, NtpScratch, REJECT_REPLY_BYTES,
    ROOTS_PER_SLOT, RateBucket, RejectFacts, RuleRecord, SLOTS, Settings, SourceKey, Stat,
    TRIE_MAP_FLAGS, TrieNode, TrieSlot, device_table_entries,
};

#[btf_map]
pub static TG_ACTIVE: Array<u32, 1> = Array::new();

#[btf_map]
pub static TG_GROUPS: Array<GroupInfo, { (SLOTS * MAX_GROUPS) as usize }> = Array::new();

#[btf_map]
pub static TG_DEV_EXACT: Array<
    TrieNode,
    { device_table_entries(DEFAULT_DEVICE_EXACT_PER_SLOT) as usize },
    { TRIE_MAP_FLAGS as usize },
> = Array::new();

#[btf_map]
pub static TG_GATEWAY: HashMap<DeviceKey, u8, { (SLOTS * MAX_GATEWAY_ADDRESSES) as usize }> =
    HashMap::new();

/// Userspace only, like `TG_DST`: the slot's device prefixes as the policy
/// wrote them, read back by a restarted controller. Packets walk the
/// compiled trie (`TG_TRIE`) instead.
#[btf_map]
pub static TG_DEV_PREFIX: LpmTrie<
    DevicePrefix,
    u32,
    { (SLOTS * DEFAULT_DEVICE_PREFIXES_PER_SLOT) as usize },
> = LpmTrie::new();

/// Userspace only: the slot's (group, destination prefix) → rule list
/// entries as compiled, read back by a restarted controller and the
/// slot-contents tests. Packets walk the compiled trie (`TG_TRIE`) instead.
#[btf_map]
pub static TG_DST: LpmTrie<Destination, u32, { (SLOTS * DEFAULT_DESTINATIONS_PER_SLOT) as usize }> =
    LpmTrie::new();

/// The flat classifier (`classify.rs`): trie nodes, and each trie's base.
#[btf_map]
pub static TG_TRIE: Array<TrieSlot, { SLOTS as usize }, { TRIE_MAP_FLAGS as usize }> = Array::new();
#[btf_map]
pub static TG_ROOTS: Array<
    u32,
    { (SLOTS * ROOTS_PER_SLOT) as usize },
    { TRIE_MAP_FLAGS as usize },
> = Array::new();

#[btf_map]
pub static TG_RULESETS: Array<RuleRecord, { (SLOTS * DEFAULT_RULE_RECORDS_PER_SLOT) as usize }> =
    Array::new();

#[btf_map]
pub static TG_COUNTERS: PerCpuArray<Counter, { DEFAULT_COUNTERS as usize }> = PerCpuArray::new();

/// Userspace bookkeeping only: pinned with the counters so that a restarted
/// controller knows which rule owns which counter.
#[btf_map]
pub static TG_OWNERS: Array<u64, { DEFAULT_COUNTERS as usize }> = Array::new();

#[btf_map]
pub static TG_STATS: PerCpuArray<Counter, { Stat::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static TG_FRAGS: LruHashMap<FragmentKey, FragmentVerdict, { DEFAULT_FRAGMENTS as usize }> =
    LruHashMap::new();

#[btf_map]
pub static TG_FRAG_SRC: LruHashMap<SourceKey, FragmentQuota, { FRAGMENT_SOURCES as usize }> =
    LruHashMap::new();

#[btf_map]
pub static TG_ETHERTYPES: HashMap<u16, u8, { MAX_PASS_ETHERTYPES as usize }> = HashMap::new();

#[btf_map]
pub static TG_EVENTS: RingBuf<DenyEvent, { EVENT_RING_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub static TG_EVENT_BKT: PerCpuArray<RateBucket, 1> = PerCpuArray::new();

#[btf_map]
pub static TG_REJECT_BKT: PerCpuArray<RateBucket, 1> = PerCpuArray::new();

#[btf_map]
pub static TG_REJECT_PKT: PerCpuArray<RejectFacts, 1> = PerCpuArray::new();

/// Where the answer is built (`reject::reply`).
#[btf_map]
pub static TG_REJECT_REPLY: PerCpuArray<[u8; REJECT_REPLY_BYTES], 1> = PerCpuArray::new();

#[btf_map]
pub static TG_SETTINGS: Array<Settings, 1> = Array::new();

/// The NTP fast path (`ntp.rs`): the advertised state, the addresses it
/// answers for, and each source's rate-limit state.
#[btf_map]
pub static TG_NTP_STATE: Array<NtpFastState, 1> = Array::new();

#[btf_map]
pub static TG_NTP_PORTS: Array<u64, { NTP_PORT_WORDS as usize }> = Array::new();

#[btf_map]
pub static TG_NTP_ADDRS: HashMap<NtpAddrKey, u8, { MAX_NTP_ADDRESSES as usize }> = HashMap::new();

#[btf_map]
pub static TG_NTP_IFACES: HashMap<u32, u8, { MAX_NTP_INTERFACES as usize }> = HashMap::new();

#[btf_map]
pub static TG_NTP_SCRATCH: PerCpuArray<NtpScratch, 1> = PerCpuArray::new();

#[btf_map]
pub static TG_NTP_PROG: ProgramArray<1> = ProgramArray::new();
#[btf_map]
pub static TG_NTP_TC: ProgramArray<1> = ProgramArray::new();

/// What the responder answered, for the controller's time health.
#[btf_map]
pub static TG_NTP_SAMPLES: RingBuf<NtpSample, { NTP_SAMPLE_RING_BYTES as usize }> = RingBuf::new();

/// The reject answerers the XDP and the TC hooks tail-call
/// (`reject::hand_over`).
#[btf_map]
pub static TG_REJECT_XDP: ProgramArray<1> = ProgramArray::new();
#[btf_map]
pub static TG_REJECT_TC: ProgramArray<1> = ProgramArray::new();

#[btf_map]
pub static TG_NTP_RATE: LruHashMap<SourceKey, u64, { NTP_RATE_SOURCES as usize }> =
    LruHashMap::new();

/// Userspace only: updating an array-of-maps from a syscall waits for an RCU
/// grace period (every program run that started before it has finished),
/// which is how the controller knows an inactive slot is no longer read.
#[btf_map]
pub static TG_GRACE: ArrayOfMaps<Array<u32, 1>, 1> = ArrayOfMaps::new();
