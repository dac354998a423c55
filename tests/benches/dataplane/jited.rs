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
    let program = bpf::prog_name(fd).context("the program's info")?;
    let (image, addresses, lens) = bpf::prog_jited(fd)?;
    ensure!(!image.is_empty(), "program {program} has no JITed image");
    let names = kernel_names(&addresses)?;
    let mut out = Vec::with_capacity(lens.len());
    let mut at = 0;
    for (i, &len) in lens.iter().enumerate() {
        let code = &image[at..at + len as usize];
        at += len as usize;
        // The first function is the program; a function the kernel has no
        // name of its own for (one LLVM split off) is told by its place.
        let name = match names.get(i).and_then(Option::as_deref) {
            _ if i == 0 => program.clone(),
            Some(name) if name != program => format!("{program}: {name}"),
            _ => format!("{program}: function {i}"),
        };
        out.push(count(name, code)?);
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

/// Disassembles `code` (x86-64) and counts what it holds.
fn count(name: String, code: &[u8]) -> Result<Function> {
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
    let text = String::from_utf8_lossy(&out.stdout);
    // An instruction line is "  offset:<TAB>mnemonic operands".
    let mnemonics: Vec<&str> = text
        .lines()
        .filter_map(|line| {
            let (offset, rest) = line.split_once(":\t")?;
            u64::from_str_radix(offset.trim(), 16).ok()?;
            rest.split_whitespace().next()
        })
        .collect();
    Ok(Function {
        name,
        bytes: code.len(),
        instructions: mnemonics.len(),
        calls: mnemonics.iter().filter(|m| m.starts_with("call")).count(),
        branches: mnemonics
            .iter()
            .filter(|m| m.starts_with('j') && !m.starts_with("jmp"))
            .count(),
    })
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
