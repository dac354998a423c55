//! Reads a policy directory: every `*.yaml`/`*.yml` file under it,
//! recursively, in path order. Each file is parsed on its own, so a
//! structural error in one file is reported and the others are still checked.
//!
//! The directory is written by many hands, so reading it is confined
//! ([`ReadLimits`]): only regular files are read (never a FIFO, socket or
//! device); a symlink is followed only when its target resolves inside the
//! policy root (the root itself may be a symlink, swapped to a new checkout);
//! a directory reached twice (by (device, inode)) is a loop, reported once;
//! and file size, total size, file count and depth are bounded.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{
    Environment, Policy,
    expect::{self, Expectation},
    parse::{ParsedFile, Source, parse},
    stamp::Stamp,
    validate::{self, GroupCache, Incremental, VersionedFile},
};
use crate::{diagnostic::Diagnostic, parallel};

/// A valid policy and the warnings about it.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Diagnostic>,
    /// The `expect:` cases of every file, in file order.
    pub expectations: Vec<Expectation>,
}

/// The files parsed by the previous load, reused while their text is the
/// same, and the groups validated from them. A reload usually follows an
/// edit of one small file; parsing a large prefix list again, or
/// validating a million devices of groups nobody touched, would dominate
/// it.
///
/// A file of groups only lets go of its parse (spec and positions, about
/// 200 bytes a device) once its groups are validated and cached: at fleet
/// scale the parses were a third of the controller's memory, and the
/// validated groups say all a reload needs of an unchanged file. Its text
/// stays, and is parsed again only when its groups must be validated again
/// (other lists, another environment) or an error must be reported in
/// full.
#[derive(Default)]
pub struct ParseCache {
    files: HashMap<PathBuf, CachedFile>,
    /// The serial the next file parsed gets.
    next_serial: u64,
    groups: GroupCache,
    last: LoadWork,
}

/// How much of the last load was done anew, for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadWork {
    /// Files not even read: their stat matched the settled stamp of the
    /// text in the cache (`stamp.rs`).
    pub files_unread: usize,
    /// Files parsed (the others came from the cache).
    pub files_parsed: usize,
    /// Unchanged files parsed again from their cached text, to validate
    /// their groups anew or to report an error in full.
    pub files_reparsed: usize,
    /// Groups validated (the others came from the cache); `None` when the
    /// whole policy was validated from scratch (the incremental check
    /// found or could not rule out an error).
    pub groups_validated: Option<usize>,
}

impl ParseCache {
    /// How much of the last load was done anew.
    pub fn last_load(&self) -> LoadWork {
        self.last
    }
}

struct CachedFile {
    /// The path and text it was parsed from, and is parsed again from.
    source: Source,
    /// Vouches for `source.text` while the file's stat matches it.
    stamp: Option<Stamp>,
    /// Names this content of this path for the group cache.
    serial: u64,
    /// `None` once let go ([`CachedFile::release`]).
    parsed: Option<ParsedFile>,
    /// The names of the groups it defines.
    groups: Vec<String>,
    /// What parsing it reported.
    diagnostics: Vec<Diagnostic>,
}

impl CachedFile {
    fn parse(source: Source, stamp: Option<Stamp>, serial: u64) -> CachedFile {
        let mut diagnostics = Vec::new();
        let parsed = parse(&source, &mut diagnostics);
        let groups = parsed
            .spec
            .as_ref()
            .map(|spec| spec.groups.keys().cloned().collect())
            .unwrap_or_default();
        CachedFile {
            source,
            stamp,
            serial,
            parsed: Some(parsed),
            groups,
            diagnostics,
        }
    }

    /// Parses the text again if the parse was let go; true if it was.
    fn reparse(&mut self) -> bool {
        if self.parsed.is_some() {
            return false;
        }
        // The same text: the same findings, kept from its first parse.
        self.parsed = Some(parse(&self.source, &mut Vec::new()));
        true
    }

    /// Lets go of the parse of a file that holds groups and nothing else
    /// (no lists, `unknown-devices` or `expect:`, which every load reads):
    /// once its groups are validated, the group cache answers for it.
    fn release(&mut self) {
        let groups_only = self
            .parsed
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .is_some_and(|s| {
                s.lists.is_empty() && s.unknown_devices.is_none() && s.expect.is_empty()
            });
        if groups_only {
            self.parsed = None;
        }
    }

    fn version(&self) -> VersionedFile<'_> {
        VersionedFile {
            parsed: self.parsed.as_ref(),
            serial: self.serial,
            groups: &self.groups,
        }
    }
}

/// Bounds on what reading a policy directory may take (`limits:` in the
/// controller's configuration). The defaults are far above real fleets: a
/// 10⁵-prefix list is about 2 MB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Bytes of one file.
    pub file_bytes: u64,
    /// Bytes of all files together.
    pub total_bytes: u64,
    /// Policy files.
    pub files: usize,
    /// Directory levels below the root.
    pub depth: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            file_bytes: 64 << 20,
            total_bytes: 256 << 20,
            files: 10_000,
            depth: 16,
        }
    }
}

/// Loads and validates the policy in `dir` within the default limits.
/// `Err` holds every error, and the warnings, sorted by file and position.
pub fn load(dir: &Path, env: &Environment) -> Result<Loaded, Vec<Diagnostic>> {
    load_cached(dir, env, &ReadLimits::default(), &mut ParseCache::default())
}

/// [`load`] within `limits`, reusing the parse of every file whose text
/// `cache` has seen.
pub fn load_cached(
    dir: &Path,
    env: &Environment,
    limits: &ReadLimits,
    cache: &mut ParseCache,
) -> Result<Loaded, Vec<Diagnostic>> {
    cache.last = LoadWork::default();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    match fs::canonicalize(dir) {
        Ok(root) => {
            let mut reader = Reader {
                root,
                limits,
                cache: &cache.files,
                started: SystemTime::now(),
                visited: HashSet::new(),
                bytes: 0,
                files: &mut files,
                errors: &mut errors,
            };
            reader.directory(dir, 0);
        }
        Err(e) => errors.push(Diagnostic::error(
            dir,
            0,
            0,
            "",
            format!("cannot read: {e}"),
        )),
    }
    if files.is_empty() && errors.is_empty() {
        errors.push(Diagnostic::error(
            dir,
            0,
            0,
            "",
            "no policy files (*.yaml, *.yml) in this directory".into(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    validate_sources(files, env, cache)
}

/// Validates a policy given as file texts (in the order given; `load` sorts
/// them by path).
pub fn from_sources(sources: &[Source], env: &Environment) -> Result<Loaded, Vec<Diagnostic>> {
    let files = sources
        .iter()
        .cloned()
        .map(|s| File::Read(s, None))
        .collect();
    validate_sources(files, env, &mut ParseCache::default())
}

/// A policy file found by the [`Reader`].
enum File {
    /// Its text, and the stamp that vouches for it when settled.
    Read(Source, Option<Stamp>),
    /// Not read: its stamp says the cache holds its text.
    Unchanged(PathBuf),
}

fn validate_sources(
    files: Vec<File>,
    env: &Environment,
    cache: &mut ParseCache,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut order = Vec::with_capacity(files.len());
    let mut current = HashMap::with_capacity(files.len());
    let mut fresh = Vec::new();
    let mut files_unread = 0;
    for file in files {
        let path = match &file {
            File::Read(source, _) => source.path.clone(),
            File::Unchanged(path) => path.clone(),
        };
        match (file, cache.files.remove(&path)) {
            (File::Unchanged(_), cached) => {
                files_unread += 1;
                let cached = cached.expect("the reader found it in the cache");
                current.insert(path.clone(), cached);
            }
            (File::Read(source, stamp), Some(mut cached)) if cached.source.text == source.text => {
                cached.stamp = stamp;
                current.insert(path.clone(), cached);
            }
            (File::Read(source, stamp), _) => {
                cache.next_serial += 1;
                fresh.push((source, stamp, cache.next_serial));
            }
        }
        order.push(path);
    }
    let files_parsed = fresh.len();
    let parse = |(source, stamp, serial)| CachedFile::parse(source, stamp, serial);
    for parsed in parallel::map(fresh, parse) {
        current.insert(parsed.source.path.clone(), parsed);
    }
    // Files that are gone are forgotten.
    cache.files = current;
    let mut diagnostics: Vec<Diagnostic> = order
        .iter()
        .flat_map(|p| cache.files[p].diagnostics.iter().cloned())
        .collect();
    let mut files_reparsed = 0;
    let mut reparse_all = |files: &mut HashMap<PathBuf, CachedFile>| {
        let files: Vec<&mut CachedFile> = files.values_mut().collect();
        files_reparsed += parallel::map(files, CachedFile::reparse)
            .into_iter()
            .filter(|&again| again)
            .count();
    };
    // The incremental check vouches only for policies without errors; the
    // full one reports them.
    let mut incremental = None;
    if !diagnostics.iter().any(Diagnostic::is_error) {
        let versions: Vec<VersionedFile> = order.iter().map(|p| cache.files[p].version()).collect();
        match validate::validate_incremental(&versions, env, &mut cache.groups) {
            Incremental::Valid(found) => incremental = Some(found),
            Incremental::Invalid => {}
            Incremental::NeedsParse => {
                drop(versions);
                reparse_all(&mut cache.files);
                let versions: Vec<VersionedFile> =
                    order.iter().map(|p| cache.files[p].version()).collect();
                if let Incremental::Valid(found) =
                    validate::validate_incremental(&versions, env, &mut cache.groups)
                {
                    incremental = Some(found);
                }
            }
        }
    }
    let groups_validated = incremental.as_ref().map(|(_, _, validated)| *validated);
    let policy = match incremental {
        Some((policy, found, _)) => {
            diagnostics.extend(found);
            policy
        }
        None => {
            reparse_all(&mut cache.files);
            let files: Vec<&ParsedFile> = order
                .iter()
                .filter_map(|p| cache.files[p].parsed.as_ref())
                .collect();
            validate::validate(&files, env, &mut diagnostics)
        }
    };
    cache.last = LoadWork {
        files_unread,
        files_parsed,
        files_reparsed,
        groups_validated,
    };
    let policy_valid = !diagnostics.iter().any(Diagnostic::is_error);
    // Files let go of hold no `expect:` cases.
    let files: Vec<&ParsedFile> = order
        .iter()
        .filter_map(|p| cache.files[p].parsed.as_ref())
        .collect();
    let expectations = expect::resolve(&files, &policy, policy_valid, &mut diagnostics);
    if groups_validated.is_some() {
        // Every group is in the group cache now.
        for file in cache.files.values_mut() {
            file.release();
        }
    }
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
    });
    bound_report(&mut diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        Err(diagnostics)
    } else {
        Ok(Loaded {
            policy,
            warnings: diagnostics,
            expectations,
        })
    }
}

/// Diagnostics reported at most; a hostile directory can produce millions.
const MAX_REPORTED: usize = 100;

/// Keeps the first [`MAX_REPORTED`] diagnostics and says how many more
/// there were, under the file of the last one kept.
fn bound_report(diagnostics: &mut Vec<Diagnostic>) {
    if diagnostics.len() <= MAX_REPORTED {
        return;
    }
    let more = diagnostics.len() - MAX_REPORTED;
    let errors = diagnostics[MAX_REPORTED..]
        .iter()
        .filter(|d| d.is_error())
        .count();
    diagnostics.truncate(MAX_REPORTED);
    let file = std::path::PathBuf::from(&diagnostics[MAX_REPORTED - 1].file);
    diagnostics.push(Diagnostic::error(
        &file,
        0,
        0,
        "",
        format!("{more} more findings not shown ({errors} of them errors); fix these first"),
    ));
}

/// One walk over a policy directory.
struct Reader<'a> {
    /// The policy root, resolved: symlinks must stay inside it.
    root: PathBuf,
    limits: &'a ReadLimits,
    /// The files the last load read, with the stamps that vouch for them.
    cache: &'a HashMap<PathBuf, CachedFile>,
    /// When the walk began: a file's stamp is settled if older than that.
    started: SystemTime,
    /// (device, inode) of every directory read, to stop loops.
    visited: HashSet<(u64, u64)>,
    /// Bytes of the policy files so far, read or not.
    bytes: u64,
    files: &'a mut Vec<File>,
    errors: &'a mut Vec<Diagnostic>,
}

impl Reader<'_> {
    fn error(&mut self, path: &Path, message: String) {
        self.errors.push(Diagnostic::error(path, 0, 0, "", message));
    }

    /// Appends the policy files under `dir` in path order. Hidden entries
    /// (such as `.git`) are skipped.
    fn directory(&mut self, dir: &Path, depth: usize) {
        if depth > self.limits.depth {
            let max = self.limits.depth;
            return self.error(
                dir,
                format!("nested more than {max} directories deep (limits.policy-depth)"),
            );
        }
        match fs::metadata(dir) {
            Ok(meta) if !self.visited.insert((meta.dev(), meta.ino())) => {
                return self.error(
                    dir,
                    "a directory already read (a symlink loop): skipped".into(),
                );
            }
            Ok(_) => {}
            Err(e) => return self.error(dir, format!("cannot read: {e}")),
        }
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => return self.error(dir, format!("cannot read: {e}")),
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) if !entry.file_name().to_string_lossy().starts_with('.') => {
                    paths.push(entry.path());
                }
                Ok(_) => {}
                Err(e) => self.error(dir, format!("cannot read: {e}")),
            }
            if paths.len() > self.limits.files.saturating_mul(4) + 1024 {
                return self.error(
                    dir,
                    "more entries than a policy directory can hold (limits.policy-files)".into(),
                );
            }
        }
        paths.sort();
        for path in paths {
            if self.files.len() > self.limits.files {
                return;
            }
            self.entry(&path, depth);
        }
    }

    fn entry(&mut self, path: &Path, depth: usize) {
        let own = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) => return self.error(path, format!("cannot read: {e}")),
        };
        if own.file_type().is_symlink() {
            // A policy repository may link shared lists in, but only from
            // inside itself: never /etc/shadow, /dev/zero or a FIFO.
            match fs::canonicalize(path) {
                Ok(target) if target.starts_with(&self.root) => {}
                Ok(_) => {
                    return self.error(
                        path,
                        "a symlink to outside the policy directory: not followed".into(),
                    );
                }
                Err(e) => {
                    return self.error(path, format!("a symlink that cannot be resolved: {e}"));
                }
            }
        }
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => return self.error(path, format!("cannot read: {e}")),
        };
        if meta.is_dir() {
            return self.directory(path, depth + 1);
        }
        if !is_policy_file(path) {
            return;
        }
        if !meta.is_file() {
            let kind = special_kind(&meta.file_type());
            return self.error(path, format!("not a regular file ({kind}): not read"));
        }
        if self.files.len() == self.limits.files {
            let max = self.limits.files;
            return self.error(
                path,
                format!("more than {max} policy files (limits.policy-files)"),
            );
        }
        let cached = self.cache.get(path).and_then(|c| c.stamp);
        if cached == Some(Stamp::of(&meta)) {
            if let Err(message) = self.within_total(meta.len()) {
                return self.error(path, message);
            }
            self.bytes += meta.len();
            return self.files.push(File::Unchanged(path.to_path_buf()));
        }
        match self.read(path) {
            Ok((text, stamp)) => self.files.push(File::Read(
                Source {
                    path: path.to_path_buf(),
                    text,
                },
                stamp,
            )),
            Err(message) => self.error(path, message),
        }
    }

    fn within_total(&self, len: u64) -> Result<(), String> {
        let total = self.limits.total_bytes;
        if self.bytes + len > total {
            return Err(format!(
                "the policy files reach more than limits.policy-bytes ({total}) with this one"
            ));
        }
        Ok(())
    }

    /// Reads one policy file within the size limits, with its stamp if
    /// settled. Opened non-blocking and checked again on the open file, so
    /// a file swapped for a FIFO between the check and the open cannot hang
    /// the reader.
    fn read(&mut self, path: &Path) -> Result<(String, Option<Stamp>), String> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| format!("cannot read: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
        if !meta.is_file() {
            let kind = special_kind(&meta.file_type());
            return Err(format!("not a regular file ({kind}): not read"));
        }
        let max = self.limits.file_bytes;
        if meta.len() > max {
            return Err(format!(
                "{} bytes, more than limits.policy-file-bytes ({max})",
                meta.len()
            ));
        }
        self.within_total(meta.len())?;
        // Taken before reading: a write while reading changes it.
        let stamp = Stamp::settled(&meta, self.started);
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read: {e}"))?;
        if bytes.len() as u64 > max {
            return Err(format!(
                "grew past limits.policy-file-bytes ({max}) while being read"
            ));
        }
        self.bytes += bytes.len() as u64;
        let text = String::from_utf8(bytes).map_err(|e| {
            format!(
                "not UTF-8 text (invalid byte at offset {}); policy files are UTF-8 YAML",
                e.utf8_error().valid_up_to()
            )
        })?;
        Ok((text, stamp))
    }
}

fn special_kind(t: &fs::FileType) -> &'static str {
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

fn is_policy_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What `load` says, in a comparable form.
    fn outcome(
        result: Result<Loaded, Vec<Diagnostic>>,
    ) -> Result<(Policy, Vec<String>), Vec<String>> {
        let text = |d: Vec<Diagnostic>| d.iter().map(ToString::to_string).collect();
        match result {
            Ok(loaded) => Ok((loaded.policy, text(loaded.warnings))),
            Err(errors) => Err(text(errors)),
        }
    }

    #[test]
    fn a_cached_load_says_what_a_fresh_one_says() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        let env = Environment::default();
        let mut cache = ParseCache::default();
        let mut check = |step: &str| {
            let fresh = outcome(load(dir.path(), &env));
            let cached = outcome(load_cached(
                dir.path(),
                &env,
                &ReadLimits::default(),
                &mut cache,
            ));
            assert_eq!(cached, fresh, "{step}");
            fresh
        };

        write(
            "groups.yaml",
            "groups:\n  meters:\n    devices: [10.1.0.0/16]\n    default: deny\n    rules:\n      - allow: {to: cloud, proto: tcp, ports: [443]}\n",
        );
        write("lists.yaml", "lists:\n  cloud: [198.51.100.0/24]\n");
        assert!(check("first load").is_ok());
        // An edit of one file, seen through the cache.
        write("lists.yaml", "lists:\n  cloud: [203.0.113.0/24]\n");
        let edited = check("edit").unwrap();
        assert_eq!(
            edited.0.groups[0].rules[0].targets[0].prefixes[0].to_string(),
            "203.0.113.0/24"
        );
        // A broken file is reported on every load, not only the first.
        write("broken.yaml", "groups: [\n");
        assert!(check("broken file").is_err());
        assert!(check("broken file, unchanged").is_err());
        // A removed file is forgotten; a removed list is an error again.
        fs::remove_file(dir.path().join("broken.yaml")).unwrap();
        assert!(check("broken file removed").is_ok());
        fs::remove_file(dir.path().join("lists.yaml")).unwrap();
        assert!(check("list removed").is_err());
    }

    #[test]
    fn a_file_is_not_read_again_while_its_settled_stamp_matches() {
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("lists.yaml");
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write(
            "groups.yaml",
            "groups:\n  meters:\n    devices: [10.1.0.0/16]\n    default: deny\n    rules:\n      - allow: {to: cloud, proto: tcp, ports: [443]}\n",
        );
        write("lists.yaml", "lists:\n  cloud: [198.51.100.0/24]\n");
        let env = Environment::default();
        let mut cache = ParseCache::default();
        let load = |cache: &mut ParseCache| {
            let loaded = load_cached(dir.path(), &env, &ReadLimits::default(), cache)
                .map_err(|e| format!("{e:?}"))
                .unwrap();
            let prefix = loaded.policy.groups[0].rules[0].targets[0].prefixes[0];
            (cache.last_load().files_unread, prefix.to_string())
        };
        // Just written: not settled, so read every time.
        assert_eq!(load(&mut cache), (0, "198.51.100.0/24".into()));
        assert_eq!(load(&mut cache), (0, "198.51.100.0/24".into()));
        std::thread::sleep(crate::policy::stamp::SETTLED + Duration::from_millis(100));
        // Read once more to take settled stamps, then trusted.
        assert_eq!(load(&mut cache), (0, "198.51.100.0/24".into()));
        assert_eq!(load(&mut cache), (2, "198.51.100.0/24".into()));
        // The same size, and the old mtime put back (as `rsync -t` would):
        // the change time still tells.
        let before = fs::metadata(&lists).unwrap();
        write("lists.yaml", "lists:\n  cloud: [198.51.101.0/24]\n");
        assert_eq!(fs::metadata(&lists).unwrap().len(), before.len());
        let modified = before.modified().unwrap();
        fs::File::options()
            .write(true)
            .open(&lists)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_eq!(load(&mut cache), (1, "198.51.101.0/24".into()));
    }
}
