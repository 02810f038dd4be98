//! Commit headers straight from a repository's pack files: the culprit search's walk needs only a
//! commit's tree, first parent and committer time, the first few hundred bytes of an object that is
//! often a few kilobytes (bots write long messages). libgit2 inflates and copies all of it; here
//! the index is searched in place (memory-mapped) and only the head of the object is inflated.
//!
//! Anything else — a commit stored as a delta, a loose object, an index of another version — is
//! `None`, and the caller reads it through libgit2.

use std::fs::File;
use std::path::Path;

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
/// Enough for `tree`, `parent` lines (a merge of several), `author` and `committer`.
const HEAD: usize = 2048;

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
        Some(Pack { idx, pack, count })
    }

    fn fanout(&self, byte: usize) -> usize {
        be32(&self.idx, 8 + byte * 4).unwrap_or(0) as usize
    }

    /// The object's offset in the pack.
    fn offset(&self, id: &[u8]) -> Option<usize> {
        let first = id[0] as usize;
        let (mut lo, mut hi) = (if first == 0 { 0 } else { self.fanout(first - 1) }, self.fanout(first));
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = IDS + mid * 20;
            match self.idx.get(at..at + 20)?.cmp(id) {
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
        }
        None
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Every pack of a repository (its object directory).
pub struct Packs {
    packs: Vec<Pack>,
    inflate: flate2::Decompress,
    head: Vec<u8>,
}

impl Packs {
    pub fn open(git_dir: &Path) -> Packs {
        let mut packs = Vec::new();
        if let Ok(dir) = std::fs::read_dir(git_dir.join("objects").join("pack")) {
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
        Packs { packs, inflate: flate2::Decompress::new(true), head: vec![0; HEAD] }
    }

    /// The start of a commit object (at least its header lines), when it is stored whole in a pack.
    pub fn commit_head(&mut self, id: Oid) -> Option<&[u8]> {
        let (pack, mut at) = self.packs.iter().find_map(|p| Some((p, p.offset(id.as_bytes())?)))?;
        let data = &pack.pack;
        // Entry header: type in bits 4-6 of the first byte, the size in 7-bit groups.
        let first = *data.get(at)?;
        if (first >> 4) & 7 != OBJ_COMMIT {
            return None;
        }
        let mut byte = first;
        while byte & 0x80 != 0 {
            at += 1;
            byte = *data.get(at)?;
        }
        at += 1;
        let input = data.get(at..(at + HEAD * 2).min(data.len()))?;
        self.inflate.reset(true);
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
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .env("GIT_AUTHOR_DATE", "@1790000000 +0000")
                .env("GIT_COMMITTER_DATE", "@1790000000 +0000")
                .output()
                .expect("git runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
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
}
