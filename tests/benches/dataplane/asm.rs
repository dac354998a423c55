//! Just enough of a BPF assembler for the floor, the lookup, the chain and
//! the ALU programs.

use tollgate::datapath::{XDP_DROP, XDP_PASS};

// BPF helper function ids (include/uapi/linux/bpf.h).
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
pub const HELPER_KTIME_GET_NS: i32 = 5;
pub const HELPER_KTIME_GET_COARSE_NS: i32 = 160;
pub const HELPER_JIFFIES64: i32 = 118;

/// Just enough of a BPF assembler for the floor and the lookup programs.
pub struct Asm(pub Vec<u8>);

impl Asm {
    pub fn new() -> Asm {
        Asm(Vec::new())
    }

    fn insn(mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Asm {
        self.0.push(code);
        self.0.push(dst | (src << 4));
        self.0.extend_from_slice(&off.to_le_bytes());
        self.0.extend_from_slice(&imm.to_le_bytes());
        self
    }

    /// `r0 = XDP_PASS; exit`: the whole XDP floor program.
    pub fn pass(self) -> Asm {
        self.ret(XDP_PASS as i32)
    }

    /// `if r0 == 0 { r0 = XDP_DROP } else { r0 = XDP_PASS }; exit`: after
    /// a lookup, says whether it found an entry.
    pub fn pass_if_found(self) -> Asm {
        // BPF_JMP | BPF_JEQ | BPF_K: if r0 == 0 skip the next two.
        self.insn(0x15, 0, 0, 2, 0)
            .ret(XDP_PASS as i32)
            .ret(XDP_DROP as i32)
    }

    /// `if r0 == 0 { r0 = XDP_DROP } else { r0 = XDP_PASS + (*(u32 *)r0 >> 32) }; exit`:
    /// after a lookup, reads the first word of the entry it found (an array
    /// lookup alone only computes its address), and returns only once the
    /// word has arrived: the return code depends on it (the shift leaves
    /// nothing of a 32-bit word, which the CPU cannot know).
    pub fn read_found(self) -> Asm {
        // A found entry: r6 = *(u32 *)(r0 + 0) (BPF_LDX | BPF_MEM | BPF_W).
        self.drop_unless_found()
            .insn(0x61, 6, 0, 0, 0)
            .pass_after_r6()
    }

    /// `if r0 == 0 { r0 = XDP_DROP; exit }`: after a lookup, goes on only
    /// with an entry found.
    fn drop_unless_found(self) -> Asm {
        // BPF_JMP | BPF_JNE | BPF_K: if r0 != 0 skip the drop.
        self.insn(0x55, 0, 0, 2, 0).ret(XDP_DROP as i32)
    }

    /// `r6` through `hops` dependent `bpf_map_lookup_elem` calls on the
    /// array `map_fd` (all zero), each keyed by the word the one before
    /// found, the key through the stack as a compiled program passes it;
    /// then [`Asm::pass_after_r6`]. A lookup that finds nothing drops.
    pub fn chain_of_lookups(self, map_fd: i32, hops: usize) -> Asm {
        // BPF_ALU64 | BPF_MOV | BPF_K: r6 = 0.
        let mut asm = self.insn(0xb7, 6, 0, 0, 0);
        for _ in 0..hops {
            // BPF_STX | BPF_MEM | BPF_W: *(u32 *)(r10 - 8) = r6; the lookup;
            // BPF_LDX | BPF_MEM | BPF_W: r6 = *(u32 *)(r0 + 0).
            asm = asm
                .insn(0x63, 10, 6, -8, 0)
                .map_and_pointer(map_fd, 2, -8)
                .call(HELPER_MAP_LOOKUP_ELEM)
                .drop_unless_found()
                .insn(0x61, 6, 0, 0, 0);
        }
        asm.pass_after_r6()
    }

    /// `r6` through `hops` dependent loads inside the one value of the
    /// array `map_fd` (1 KiB, all zero), looked up once, each at the offset
    /// the one before read (masked into the value), as a trie walk's levels
    /// are read; then [`Asm::pass_after_r6`].
    pub fn chain_of_loads(self, map_fd: i32, hops: usize) -> Asm {
        // The lookup; r7 = r0; r6 = 0.
        let mut asm = self
            .lookup(map_fd, &[0; 4])
            .drop_unless_found()
            .insn(0xbf, 7, 0, 0, 0)
            .insn(0xb7, 6, 0, 0, 0);
        for _ in 0..hops {
            // BPF_ALU64 | BPF_AND | BPF_K: r6 &= 0x3fc; r1 = r7;
            // BPF_ALU64 | BPF_ADD | BPF_X: r1 += r6; r6 = *(u32 *)(r1 + 0).
            asm = asm
                .insn(0x57, 6, 0, 0, 0x3fc)
                .insn(0xbf, 1, 7, 0, 0)
                .insn(0x0f, 1, 6, 0, 0)
                .insn(0x61, 6, 1, 0, 0);
        }
        asm.pass_after_r6()
    }

    /// `rounds` rounds of one ALU instruction on each of four independent
    /// chains (r6..r9: added to itself, then xored with a constant, in
    /// turn), then [`Asm::pass_after_r6`] on their xor: what an
    /// instruction costs, looped.
    pub fn alu(self, rounds: usize) -> Asm {
        let mut asm = self.alu_chains();
        for round in 0..rounds {
            asm = asm.alu_round(round);
        }
        asm.alu_xor().pass_after_r6()
    }

    /// `blocks` blocks of one [`Asm::alu`] round each (four instructions),
    /// every block ending in a branch taken over `gap` instructions that
    /// never run: an exit, taken only if the context's first word were
    /// 0x7777 (an XDP frame's address, a TC frame's length: never), which
    /// the verifier cannot rule out. A gap of 2 keeps the code contiguous;
    /// a gap of 40 puts each block on a cache line of its own (a JITed
    /// instruction is about 4–5 bytes). Then [`Asm::pass_after_r6`] on the
    /// chains' xor, less its top bit (32 doublings reach bit 32).
    pub fn alu_blocks(self, blocks: usize, gap: i16) -> Asm {
        assert!(gap >= 2, "the skipped exit is two instructions");
        // BPF_LDX | BPF_MEM | BPF_W: r5 = the context's first word.
        let mut asm = self.insn(0x61, 5, 1, 0, 0).alu_chains();
        for block in 0..blocks {
            // BPF_JMP | BPF_JNE | BPF_K: if r5 != 0x7777 skip the exit.
            asm = asm.alu_round(block).insn(0x55, 5, 0, gap, 0x7777);
            for _ in 2..gap {
                asm = asm.insn(0xb7, 1, 0, 0, 0);
            }
            asm = asm.ret(XDP_PASS as i32);
        }
        // BPF_ALU64 | BPF_AND | BPF_K: r6 &= 0x7fff_ffff.
        asm.alu_xor()
            .insn(0x57, 6, 0, 0, 0x7fff_ffff)
            .pass_after_r6()
    }

    /// BPF_ALU64 | BPF_MOV | BPF_K: r6..r9 = 1..4, the chains of
    /// [`Asm::alu`].
    fn alu_chains(mut self) -> Asm {
        for (i, reg) in (6..=9).enumerate() {
            self = self.insn(0xb7, reg, 0, 0, i as i32 + 1);
        }
        self
    }

    /// One instruction on each chain: BPF_ALU64 | BPF_ADD | BPF_X (reg +=
    /// reg) in even rounds, BPF_ALU64 | BPF_XOR | BPF_K (reg ^= round) in
    /// odd ones.
    fn alu_round(mut self, round: usize) -> Asm {
        for reg in 6..=9u8 {
            self = if round.is_multiple_of(2) {
                self.insn(0x0f, reg, reg, 0, 0)
            } else {
                self.insn(0xa7, reg, 0, 0, round as i32)
            };
        }
        self
    }

    /// r6 ^= r7; r6 ^= r8; r6 ^= r9.
    fn alu_xor(self) -> Asm {
        self.insn(0xaf, 6, 7, 0, 0)
            .insn(0xaf, 6, 8, 0, 0)
            .insn(0xaf, 6, 9, 0, 0)
    }

    /// `r0 = XDP_PASS + (r6 >> 32); exit`: returns only once the 32-bit
    /// word in `r6` has arrived: the return code depends on it (the shift
    /// leaves nothing of it, which the CPU cannot know).
    fn pass_after_r6(self) -> Asm {
        // BPF_ALU64 | BPF_RSH | BPF_K; BPF_ALU64 | BPF_MOV | BPF_K;
        // BPF_ALU64 | BPF_ADD | BPF_X; BPF_JMP | BPF_EXIT.
        self.insn(0x77, 6, 0, 0, 32)
            .insn(0xb7, 0, 0, 0, XDP_PASS as i32)
            .insn(0x0f, 0, 6, 0, 0)
            .insn(0x95, 0, 0, 0, 0)
    }

    /// `r0 = value; exit`.
    pub fn ret(self, value: i32) -> Asm {
        // BPF_ALU64 | BPF_MOV | BPF_K; BPF_JMP | BPF_EXIT.
        self.insn(0xb7, 0, 0, 0, value).insn(0x95, 0, 0, 0, 0)
    }

    pub fn call(self, helper: i32) -> Asm {
        self.insn(0x85, 0, 0, 0, helper)
    }

    /// `call +skip`: a BPF-to-BPF call (BPF_PSEUDO_CALL) of the function
    /// `skip` instructions after the next one.
    pub fn call_local(self, skip: i32) -> Asm {
        self.insn(0x85, 0, 1, 0, skip)
    }

    /// Stores `bytes` on the stack at `base` (8-byte aligned, below r10).
    fn stack(mut self, base: i16, bytes: &[u8]) -> Asm {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(8) * 8, 0);
        for (i, word) in padded.chunks(4).enumerate() {
            let imm = i32::from_ne_bytes(word.try_into().expect("4 bytes"));
            // BPF_ST | BPF_MEM | BPF_W: *(u32 *)(r10 + off) = imm.
            self = self.insn(0x62, 10, 0, base + 4 * i as i16, imm);
        }
        self
    }

    /// `r1 = map` (BPF_LD | BPF_DW | BPF_IMM, BPF_PSEUDO_MAP_FD); `reg =
    /// r10 + base`.
    fn map_and_pointer(self, map_fd: i32, reg: u8, base: i16) -> Asm {
        self.insn(0x18, 1, 1, 0, map_fd)
            .insn(0, 0, 0, 0, 0)
            .insn(0xbf, reg, 10, 0, 0)
            .insn(0x07, reg, 0, 0, i32::from(base))
    }

    /// `bpf_map_lookup_elem(map, &key)` with the 4-byte key the frame starts
    /// with (an XDP program; a frame shorter than 4 bytes is dropped).
    pub fn lookup_frame_key(self, map_fd: i32) -> Asm {
        self.lookup_frame_key_of(map_fd, 4)
    }

    /// `bpf_map_lookup_elem(map, &key)` with the `len`-byte key (a multiple
    /// of 4, at most 16) the frame starts with, copied to the stack a word
    /// at a time; a shorter frame is dropped.
    pub fn lookup_frame_key_of(self, map_fd: i32, len: usize) -> Asm {
        assert!(len.is_multiple_of(4) && (4..=16).contains(&len));
        let base = -16i16;
        // r2 = ctx->data; r3 = ctx->data_end (BPF_LDX | BPF_MEM | BPF_W).
        let mut asm = self
            .insn(0x61, 2, 1, 0, 0)
            .insn(0x61, 3, 1, 4, 0)
            // r4 = r2 + len; if r4 <= r3 skip the drop (BPF_JMP | BPF_JLE | BPF_X).
            .insn(0xbf, 4, 2, 0, 0)
            .insn(0x07, 4, 0, 0, len as i32)
            .insn(0xbd, 4, 3, 2, 0)
            .ret(XDP_DROP as i32);
        for word in 0..len as i16 / 4 {
            // r5 = *(u32 *)(r2 + 4 * word); *(u32 *)(r10 + base + 4 * word) = r5.
            asm = asm
                .insn(0x61, 5, 2, 4 * word, 0)
                .insn(0x63, 10, 5, base + 4 * word, 0);
        }
        asm.map_and_pointer(map_fd, 2, base)
            .call(HELPER_MAP_LOOKUP_ELEM)
    }

    /// `bpf_map_lookup_elem(map, &key)` with `key` built on the stack.
    pub fn lookup(self, map_fd: i32, key: &[u8]) -> Asm {
        let base = -((key.len().div_ceil(8) * 8) as i16);
        self.stack(base, key)
            .map_and_pointer(map_fd, 2, base)
            .call(HELPER_MAP_LOOKUP_ELEM)
    }
}
