//! Objects straight from a repository's pack files, for the culprit search's long walks: the index
//! is searched in place (memory-mapped), deltas are applied here, and recently built objects are
//! kept for the next delta that needs them (a walk down the history meets older versions of the same
//! trees, stored as deltas against the newer ones it just read). A commit is read only up to its
//! `committer` line when it is stored whole: the walk needs its tree, first parent and time, the first
//! few hundred bytes of an object that bots make several kilobytes long.
//!
//! Nothing here takes a lock shared with another thread (libgit2's pack windows do), so the walk's
//! read-ahead threads run side by side. Anything this does not read — a loose object, an index of
//! another version, a damaged entry — is `None`, and the caller reads it through libgit2.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::rc::Rc;

use git2::Oid;
use memmap2::Mmap;

/// One `.idx` (version 2) and its `.pack`, mapped.
struct Pack {
    idx: Mmap,
    pack: Mmap,
    count: usize,
}

/// Where the sorted object ids start in a version-2 index: magic, version, 256 fan-out entries.
const IDS: usize = 8 + 256 * 4;
const OBJ_COMMIT: u8 = 1;
const OBJ_TAG: u8 = 4;
const OBJ_OFS_DELTA: u8 = 6;
const OBJ_REF_DELTA: u8 = 7;
/// Enough for `tree`, `parent` lines (a merge of several), `author` and `committer`.
const HEAD: usize = 2048;
/// Built objects kept for later deltas, in bytes: cleared when full.
const CACHE_BYTES: usize = 8 << 20;
/// Objects larger than this are not kept.
const CACHE_ONE: usize = 512 << 10;
/// Longer delta chains are left to libgit2 (git writes at most 50 by default).
const MAX_DEPTH: usize = 100;

impl Pack {
    fn open(idx_path: &Path) -> Option<Pack> {
        let map = |p: &Path| -> Option<Mmap> {
            let f = File::open(p).ok()?;
            // SAFETY: pack files are written once and never changed in place (git replaces them
            // by renaming new files); a mapping of one being deleted stays valid.
            unsafe { Mmap::map(&f) }.ok()
        };
        let idx = map(idx_path)?;
        if idx.len() < IDS || idx[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
            return None;
        }
        let count = be32(&idx, 8 + 255 * 4)? as usize;
        if idx.len() < IDS + count * 28 {
            return None;
        }
        let pack = map(&idx_path.with_extension("pack"))?;
        if pack.len() < 12 || &pack[..4] != b"PACK" {
            return None;
        }
        Some(Pack { idx, pack, count })
    }

    fn fanout(&self, byte: usize) -> usize {
        be32(&self.idx, 8 + byte * 4).unwrap_or(0) as usize
    }

    /// The object's offset in the pack. Ids are uniformly spread, so the search guesses where
    /// in its first byte's range the id sits (from the next eight bytes), then narrows by halves.
    fn offset(&self, id: &[u8]) -> Option<usize> {
        let first = id[0] as usize;
        let (mut lo, mut hi) = (if first == 0 { 0 } else { self.fanout(first - 1) }, self.fanout(first));
        let key = prefix(id)?;
        let at = |i: usize| self.idx.get(IDS + i * 20..IDS + i * 20 + 20);
        let mut guessed = false;
        while lo < hi {
            let guess = !guessed && hi - lo >= 8;
            let mid = if !guess {
                (lo + hi) / 2
            } else {
                guessed = true;
                // The id's place among the prefixes after its first byte, as a fraction of the range.
                let frac = (key << 8) as u128;
                (lo + ((frac * (hi - lo) as u128) >> 64) as usize).min(hi - 1)
            };
            let entry = at(mid)?;
            let order = prefix(entry)?.cmp(&key).then_with(|| entry.cmp(id));
            match order {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let offsets = IDS + self.count * 24;
                    let small = be32(&self.idx, offsets + mid * 4)?;
                    if small & 0x8000_0000 == 0 {
                        return Some(small as usize);
                    }
                    let large = offsets + self.count * 4 + (small & 0x7fff_ffff) as usize * 8;
                    let bytes: [u8; 8] = self.idx.get(large..large + 8)?.try_into().ok()?;
                    return usize::try_from(u64::from_be_bytes(bytes)).ok();
                }
            }
            // After a guess, look just around it before halving what is left.
            if guess && hi - lo > 64 {
                let probe = if order == std::cmp::Ordering::Less {
                    (lo + 32).min(hi)
                } else {
                    hi.saturating_sub(32).max(lo)
                };
                let p = at(probe.min(hi - 1))?;
                if order == std::cmp::Ordering::Less && p > id {
                    hi = probe;
                } else if order == std::cmp::Ordering::Greater && p < id {
                    lo = probe;
                }
            }
        }
        None
    }

    /// An entry's type, its size (inflated), and where its data starts.
    fn header(&self, mut at: usize) -> Option<(u8, usize, usize)> {
        let data = &self.pack;
        let mut byte = *data.get(at)?;
        let kind = (byte >> 4) & 7;
        let mut size = (byte & 0x0f) as usize;
        let mut shift = 4;
        while byte & 0x80 != 0 {
            at += 1;
            byte = *data.get(at)?;
            size |= ((byte & 0x7f) as usize).checked_shl(shift)?;
            shift += 7;
        }
        Some((kind, size, at + 1))
    }
}

/// The deflate stream inside a zlib stream (its two-byte header checked, its checksum left
/// unread, as the id already names the content).
fn deflate_body(z: &[u8]) -> Option<&[u8]> {
    let (cmf, flg) = (*z.first()?, *z.get(1)?);
    let ok = cmf & 0x0f == 8 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0 && flg & 0x20 == 0;
    ok.then(|| &z[2..])
}

/// The first eight bytes of an id, as a number (big-endian: ordered as the ids are).
fn prefix(id: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(id.get(..8)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A delta's size prefix (little-endian, 7 bits a byte).
fn varint(d: &[u8], mut i: usize) -> Option<(usize, usize)> {
    let mut v = 0usize;
    let mut shift = 0u32;
    loop {
        let b = *d.get(i)?;
        i += 1;
        v |= ((b & 0x7f) as usize).checked_shl(shift)?;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((v, i));
        }
    }
}

/// Builds an object from its base and a git delta (copy and insert instructions).
fn apply_delta(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    let (source, i) = varint(delta, 0)?;
    let (target, mut i) = varint(delta, i)?;
    if source != base.len() {
        return None;
    }
    let mut out = Vec::with_capacity(target);
    while i < delta.len() {
        let cmd = delta[i];
        i += 1;
        if cmd & 0x80 != 0 {
            let (mut off, mut size) = (0usize, 0usize);
            for k in 0..4 {
                if cmd & (1 << k) != 0 {
                    off |= (*delta.get(i)? as usize) << (8 * k);
                    i += 1;
                }
            }
            for k in 0..3 {
                if cmd & (0x10 << k) != 0 {
                    size |= (*delta.get(i)? as usize) << (8 * k);
                    i += 1;
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            out.extend_from_slice(base.get(off..off.checked_add(size)?)?);
        } else if cmd != 0 {
            let n = cmd as usize;
            out.extend_from_slice(delta.get(i..i + n)?);
            i += n;
        } else {
            return None;
        }
    }
    (out.len() == target).then_some(out)
}

/// An object read from a pack: its type (1 commit, 2 tree, 3 blob, 4 tag) and its bytes.
pub type Object = (u8, Rc<[u8]>);

/// Every pack of a repository (its object directory).
pub struct Packs {
    packs: Vec<Pack>,
    inflate: flate2::Decompress,
    head: Vec<u8>,
    /// (pack, offset) → object, for the deltas still to come.
    cache: HashMap<(usize, usize), Object>,
    cached: usize,
}

impl Packs {
    /// The packs of a repository's object directory and of the ones it borrows from
    /// (`objects/info/alternates`, as `git clone --shared` writes it).
    pub fn open(git_dir: &Path) -> Packs {
        let mut packs = Vec::new();
        let mut dirs = vec![git_dir.join("objects")];
        let mut i = 0;
        while i < dirs.len() && dirs.len() < 16 {
            if let Ok(list) = std::fs::read_to_string(dirs[i].join("info").join("alternates")) {
                for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                    let alt = dirs[i].join(line);
                    if !dirs.contains(&alt) {
                        dirs.push(alt);
                    }
                }
            }
            i += 1;
        }
        for objects in &dirs {
            let Ok(dir) = std::fs::read_dir(objects.join("pack")) else { continue };
            for e in dir.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "idx")
                    && let Some(pack) = Pack::open(&p)
                {
                    packs.push(pack);
                }
            }
        }
        // The largest first: most objects are found in the first one searched.
        packs.sort_by_key(|p| std::cmp::Reverse(p.count));
        Packs {
            packs,
            inflate: flate2::Decompress::new(false),
            head: vec![0; HEAD],
            cache: HashMap::new(),
            cached: 0,
        }
    }

    fn find(&self, id: &[u8]) -> Option<(usize, usize)> {
        self.packs.iter().enumerate().find_map(|(i, p)| Some((i, p.offset(id)?)))
    }

    /// A whole object, when it is in a pack.
    pub fn read(&mut self, id: Oid) -> Option<Object> {
        let (pack, at) = self.find(id.as_bytes())?;
        self.object_at(pack, at, 0)
    }

    fn inflate_whole(&mut self, pack: usize, at: usize, size: usize) -> Option<Vec<u8>> {
        let input = deflate_body(self.packs[pack].pack.get(at..)?)?;
        let mut out = vec![0; size];
        self.inflate.reset(false);
        let status = self.inflate.decompress(input, &mut out, flate2::FlushDecompress::Finish).ok()?;
        (status == flate2::Status::StreamEnd && self.inflate.total_out() as usize == size).then_some(out)
    }

    fn object_at(&mut self, pack: usize, at: usize, depth: usize) -> Option<Object> {
        if let Some(o) = self.cache.get(&(pack, at)) {
            return Some(o.clone());
        }
        if depth > MAX_DEPTH {
            return None;
        }
        let (kind, size, data) = self.packs[pack].header(at)?;
        let object: Object = match kind {
            1..=OBJ_TAG => (kind, self.inflate_whole(pack, data, size)?.into()),
            OBJ_OFS_DELTA => {
                // The base's distance back, big-endian 7 bits a byte, each continuation adding one.
                let p = &self.packs[pack].pack;
                let mut i = data;
                let mut byte = *p.get(i)?;
                let mut back = (byte & 0x7f) as usize;
                while byte & 0x80 != 0 {
                    i += 1;
                    byte = *p.get(i)?;
                    back = (back.checked_add(1)?.checked_shl(7)?) | (byte & 0x7f) as usize;
                }
                let (base_kind, base) = self.object_at(pack, at.checked_sub(back)?, depth + 1)?;
                let delta = self.inflate_whole(pack, i + 1, size)?;
                (base_kind, apply_delta(&base, &delta)?.into())
            }
            OBJ_REF_DELTA => {
                let base_id = self.packs[pack].pack.get(data..data + 20)?.to_vec();
                let (bp, bat) = self.find(&base_id)?;
                let (base_kind, base) = self.object_at(bp, bat, depth + 1)?;
                let delta = self.inflate_whole(pack, data + 20, size)?;
                (base_kind, apply_delta(&base, &delta)?.into())
            }
            _ => return None,
        };
        if object.1.len() <= CACHE_ONE {
            if self.cached + object.1.len() > CACHE_BYTES {
                self.cache.clear();
                self.cached = 0;
            }
            self.cached += object.1.len();
            self.cache.insert((pack, at), object.clone());
        }
        Some(object)
    }

    /// The start of a commit object (at least its header lines), when it is in a pack.
    pub fn commit_head(&mut self, id: Oid) -> Option<&[u8]> {
        let (pack, at) = self.find(id.as_bytes())?;
        let (kind, _, data) = self.packs[pack].header(at)?;
        if kind != OBJ_COMMIT {
            // Stored as a delta (git deltifies commits too): built whole.
            let (kind, bytes) = self.object_at(pack, at, 0)?;
            if kind != OBJ_COMMIT {
                return None;
            }
            let n = bytes.len().min(HEAD);
            self.head[..n].copy_from_slice(&bytes[..n]);
            return Some(&self.head[..n]);
        }
        let input = self.packs[pack].pack.get(data..(data + HEAD * 2).min(self.packs[pack].pack.len()))?;
        let input = deflate_body(input)?;
        self.inflate.reset(false);
        // Inflated a little at a time: the walk needs the lines up to `committer`, which usually
        // end within the first few hundred bytes (a signature and the message follow).
        let mut got = 0;
        let mut step = 384;
        loop {
            let end = (got + step).min(HEAD);
            let read = self.inflate.total_in() as usize;
            let status = self
                .inflate
                .decompress(&input[read..], &mut self.head[got..end], flate2::FlushDecompress::None)
                .ok()?;
            got = self.inflate.total_out() as usize;
            let head = &self.head[..got];
            // Complete once the committer line has ended, or the header has (an empty line).
            let committer = memchr::memmem::find(head, b"\ncommitter ")
                .is_some_and(|at| memchr::memchr(b'\n', &head[at + 1..]).is_some());
            if committer
                || status == flate2::Status::StreamEnd
                || memchr::memmem::find(head, b"\n\n").is_some()
            {
                break;
            }
            if end == HEAD || read == self.inflate.total_in() as usize && got < end {
                return None;
            }
            step *= 2;
        }
        Some(&self.head[..got])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_commit_headers_from_packs_and_declines_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| crate::adapters::test_git(dir.path(), args);
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join("a"), "x").unwrap();
        git(&["add", "a"]);
        git(&[
            "-c",
            "user.name=A",
            "-c",
            "user.email=a@x",
            "commit",
            "-q",
            "-m",
            &"long message ".repeat(500),
        ]);
        let loose = Oid::from_str(&git(&["rev-parse", "HEAD"])).unwrap();
        assert!(
            Packs::open(&dir.path().join(".git")).commit_head(loose).is_none(),
            "a loose object is not in a pack"
        );
        git(&["gc", "-q"]);
        let mut packs = Packs::open(&dir.path().join(".git"));
        let head = packs.commit_head(loose).expect("packed now").to_vec();
        let text = String::from_utf8_lossy(&head);
        assert!(
            text.starts_with("tree ") && text.contains("\ncommitter A <a@x> 1790000000 +0000\n"),
            "{text}"
        );
        assert!(head.len() < 6000, "only the head is inflated");
        let tree = Oid::from_str(&git(&["rev-parse", "HEAD^{tree}"])).unwrap();
        assert!(packs.commit_head(tree).is_none(), "not a commit");
        assert!(packs.commit_head(Oid::from_str(&"0".repeat(40)).unwrap()).is_none());
    }

    /// Every object of a repository repacked hard (commits, trees and blobs stored as deltas, in
    /// chains) reads the same as through libgit2.
    #[test]
    fn deltas_are_built_as_libgit2_builds_them() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| crate::adapters::test_git(dir.path(), args);
        git(&["init", "-q", "-b", "main"]);
        let body: String = (0..200).map(|i| format!("line {i} of a values file with some text\n")).collect();
        for i in 0..60 {
            let dir_name = format!("apps/svc{}", i % 7);
            std::fs::create_dir_all(dir.path().join(&dir_name)).unwrap();
            let text = body.replace(&format!("line {i} "), &format!("line {i} changed "));
            std::fs::write(dir.path().join(&dir_name).join("values.yaml"), format!("tag: 1.{i}\n{text}"))
                .unwrap();
            git(&["add", "-A"]);
            git(&[
                "commit",
                "-q",
                "-m",
                &format!("bump svc{} to 1.{i}\n\n{}", i % 7, "Renovate body. ".repeat(40)),
            ]);
        }
        git(&["repack", "-a", "-d", "-f", "-q", "--depth=50", "--window=50"]);
        let idx = std::fs::read_dir(dir.path().join(".git/objects/pack"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "idx"))
            .unwrap();
        let verify = git(&["verify-pack", "-v", idx.to_str().unwrap()]);
        for kind in ["commit", "tree", "blob"] {
            let deltas = verify
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some(kind) && l.split_whitespace().count() >= 7)
                .count();
            assert!(deltas > 0, "the repack stored some {kind}s as deltas:\n{verify}");
        }
        let repo = git2::Repository::open(dir.path()).unwrap();
        let odb = repo.odb().unwrap();
        let mut packs = Packs::open(&dir.path().join(".git"));
        let mut ids = Vec::new();
        odb.foreach(|id| {
            ids.push(*id);
            true
        })
        .unwrap();
        assert!(ids.len() > 200);
        for id in ids {
            let want = odb.read(id).unwrap();
            let (kind, bytes) = packs.read(id).unwrap_or_else(|| panic!("{id} read from the pack"));
            assert_eq!(&*bytes, want.data(), "{id}");
            let want_kind = match want.kind() {
                git2::ObjectType::Commit => 1,
                git2::ObjectType::Tree => 2,
                git2::ObjectType::Blob => 3,
                _ => 4,
            };
            assert_eq!(kind, want_kind, "{id}");
            if kind == 1 {
                let head = packs.commit_head(id).unwrap();
                assert!(
                    want.data().starts_with(head) && head.windows(11).any(|w| w == b"\ncommitter "),
                    "{id}"
                );
            }
        }
    }

    /// An index with thousands of ids (tens per first byte, where the search guesses): every one
    /// is found, at the offset libgit2 reads it from, and ids that are not there are not found.
    #[test]
    fn every_id_of_a_large_index_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut stream = String::new();
        for i in 0..6000 {
            let body = format!("blob number {i}\n");
            stream.push_str(&format!("blob\ndata {}\n{body}\n", body.len()));
        }
        let run = |args: &[&str], input: Option<&str>| {
            use std::io::Write;
            let mut child = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("git runs");
            if let Some(i) = input {
                child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
            }
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        run(&["init", "-q", "--bare"], None);
        run(&["fast-import", "--quiet"], Some(&stream));
        let repo = git2::Repository::open(dir.path()).unwrap();
        let odb = repo.odb().unwrap();
        let mut ids = Vec::new();
        odb.foreach(|id| {
            ids.push(*id);
            true
        })
        .unwrap();
        assert_eq!(ids.len(), 6000);
        let mut packs = Packs::open(dir.path());
        for id in &ids {
            let (_, bytes) = packs.read(*id).unwrap_or_else(|| panic!("{id} found"));
            assert_eq!(&*bytes, odb.read(*id).unwrap().data());
        }
        for id in ids.iter().take(500) {
            let mut missing = id.as_bytes().to_vec();
            missing[19] ^= 0x55;
            let missing = Oid::from_bytes(&missing).unwrap();
            if !ids.contains(&missing) {
                assert!(packs.read(missing).is_none(), "{missing} is not in the pack");
            }
        }
    }

    /// A `git clone --shared` borrows its objects: they are read from the packs it names.
    #[test]
    fn objects_of_a_shared_clone_are_read_from_the_repository_it_borrows_from() {
        let dir = tempfile::tempdir().unwrap();
        let git = crate::adapters::test_git;
        let origin = dir.path().join("origin");
        std::fs::create_dir(&origin).unwrap();
        git(&origin, &["init", "-q", "-b", "main"]);
        std::fs::write(origin.join("a.yaml"), "image: x:1\n").unwrap();
        git(&origin, &["add", "-A"]);
        git(&origin, &["commit", "-q", "-m", "one"]);
        git(&origin, &["gc", "-q"]);
        let head = Oid::from_str(&git(&origin, &["rev-parse", "HEAD"])).unwrap();
        git(dir.path(), &["clone", "-q", "--bare", "--shared", "origin", "clone.git"]);
        let mut packs = Packs::open(&dir.path().join("clone.git"));
        let (kind, _) = packs.read(head).expect("the borrowed commit is read");
        assert_eq!(kind, OBJ_COMMIT);
    }
}
