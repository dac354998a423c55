//! The machine code the JIT made of each program measured, function by
//! function: the image `bpftool prog dump jited` prints, read the way it
//! reads it (`bpf::prog_jited`) and disassembled with binutils' `objdump`
//! (this machine's bpftool is built without a disassembler). Static
//! counts: what a path executes is a part of them.

use std::{io::Write as _, process::Command};

use anyhow::{Context as _, Result, ensure};

use crate::bpf;

/// One function of a JITed program.
pub struct Function {
    /// The program's name, then the function's where it has its own.
    pub name: String,
    pub bytes: usize,
    pub instructions: usize,
    /// `call`s: helpers, BPF-to-BPF calls, the kernel's thunks.
    pub calls: usize,
    /// Conditional jumps.
    pub branches: usize,
}

/// The functions of program `fd`, in the kernel's order (the program
/// first, then the functions it calls).
pub fn functions(fd: i32) -> Result<Vec<Function>> {
    Ok(disassemble(fd)?.iter().map(Code::counts).collect())
}

/// One function of a JITed program, instruction by instruction.
pub struct Code {
    /// As [`Function::name`].
    pub name: String,
    /// The kernel address of its first byte.
    pub address: u64,
    pub bytes: usize,
    pub instructions: Vec<Instruction>,
}

/// One x86-64 instruction as `objdump` reads it.
pub struct Instruction {
    /// From the function's first byte.
    pub offset: u64,
    pub mnemonic: String,
    /// Where a direct jump goes, as an offset in the function.
    pub target: Option<u64>,
}

impl Instruction {
    /// Whether the CPU may go elsewhere than the next instruction after
    /// this one (a jump, conditional or not, or a return). A call returns
    /// to the next instruction.
    pub fn ends_a_block(&self) -> bool {
        self.mnemonic.starts_with('j') || self.mnemonic.starts_with("ret")
    }
}

impl Code {
    /// What the function holds, counted.
    pub fn counts(&self) -> Function {
        let starting = |prefix: &str| {
            self.instructions
                .iter()
                .filter(|i| i.mnemonic.starts_with(prefix))
                .count()
        };
        Function {
            name: self.name.clone(),
            bytes: self.bytes,
            instructions: self.instructions.len(),
            calls: starting("call"),
            branches: starting("j") - starting("jmp"),
        }
    }
}

/// The functions of program `fd` disassembled, in the kernel's order.
pub fn disassemble(fd: i32) -> Result<Vec<Code>> {
    let program = bpf::prog_name(fd).context("the program's info")?;
    let (image, addresses, lens) = bpf::prog_jited(fd)?;
    ensure!(!image.is_empty(), "program {program} has no JITed image");
    ensure!(
        addresses.len() == lens.len(),
        "program {program}: {} function addresses for {} lengths",
        addresses.len(),
        lens.len()
    );
    let names = kernel_names(&addresses)?;
    let mut out = Vec::with_capacity(lens.len());
    let mut at = 0;
    for (i, &len) in lens.iter().enumerate() {
        let bytes = &image[at..at + len as usize];
        at += len as usize;
        // The first function is the program; a function the kernel has no
        // name of its own for (one LLVM split off) is told by its place.
        let name = match names.get(i).and_then(Option::as_deref) {
            _ if i == 0 => program.clone(),
            Some(name) if name != program => format!("{program}: {name}"),
            _ => format!("{program}: function {i}"),
        };
        out.push(Code {
            name,
            address: addresses[i],
            bytes: bytes.len(),
            instructions: objdump(bytes)?,
        });
    }
    Ok(out)
}

/// Each function's name from `/proc/kallsyms` (`bpf_prog_<tag>_<name>`),
/// by the address the kernel gave for it.
fn kernel_names(addresses: &[u64]) -> Result<Vec<Option<String>>> {
    let symbols = std::fs::read_to_string("/proc/kallsyms").context("read /proc/kallsyms")?;
    let mut names = vec![None; addresses.len()];
    for line in symbols.lines() {
        let mut fields = line.split_whitespace();
        let (Some(address), Some(_), Some(symbol)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(address) = u64::from_str_radix(address, 16) else {
            continue;
        };
        if let Some(i) = addresses.iter().position(|&a| a == address)
            && let Some(rest) = symbol.strip_prefix("bpf_prog_")
        {
            // Past the 16 hex digits of the tag and the underscore.
            names[i] = rest.get(17..).map(str::to_string);
        }
    }
    Ok(names)
}

/// Disassembles `code` (x86-64).
fn objdump(code: &[u8]) -> Result<Vec<Instruction>> {
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(code)?;
    let out = Command::new("objdump")
        .args([
            "-D",
            "-b",
            "binary",
            "-m",
            "i386:x86-64",
            "--no-show-raw-insn",
        ])
        .arg(file.path())
        .output()
        .context("run objdump (binutils)")?;
    ensure!(
        out.status.success(),
        "objdump: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // An instruction line is "  offset:<TAB>mnemonic operands"; a direct
    // jump's operand is its target, "0x<offset>".
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (offset, rest) = line.split_once(":\t")?;
            let offset = u64::from_str_radix(offset.trim(), 16).ok()?;
            let mut words = rest.split_whitespace();
            let mnemonic = words.next()?.to_string();
            let target = words
                .next()
                .filter(|_| mnemonic.starts_with('j'))
                .and_then(|operand| operand.strip_prefix("0x"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            Some(Instruction {
                offset,
                mnemonic,
                target,
            })
        })
        .collect())
}

/// The descriptor of the BPF program named `name` among this process's
/// (the live dataplane's programs: only one `Dataplane` is open at a time
/// here).
pub fn own_program(name: &str) -> Result<i32> {
    bpf::own_fds("anon_inode:bpf-prog")?
        .into_iter()
        .find(|&fd| bpf::prog_name(fd).as_deref() == Some(name))
        .with_context(|| format!("no program named {name} is open"))
}
