//! The access log file, rotated by size: `access.log` is written until it
//! would pass `max_bytes`, then renamed `access.log.1` (the older ones move
//! up to `.2`, … `.keep`; the oldest is deleted), and a new file started.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An append-only file rotated by size.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Option<File>,
    written: u64,
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating its directory.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let mut f = Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file: None,
            written: 0,
        };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Appends `buf` (whole lines), rotating first when it would not fit.
    /// After an error the file is opened again on the next write.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("access log file not open"));
        };
        match file.write_all(buf) {
            Ok(()) => {
                self.written += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    /// Appends whole lines (`buf` ends with a newline), rotating between
    /// lines so that no file passes `max_bytes` (unless one line alone is
    /// longer) and no line is split across files.
    pub fn write_lines(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            let space =
                usize::try_from(self.max_bytes.saturating_sub(self.written)).unwrap_or(usize::MAX);
            if rest.len() <= space {
                return self.write(rest);
            }
            let fits = rest[..space].iter().rposition(|b| *b == b'\n');
            let end = match fits {
                Some(i) => i + 1,
                None if self.written > 0 => {
                    self.rotate()?;
                    continue;
                }
                // One line longer than a whole file: it gets a file alone.
                None => rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1),
            };
            self.write(&rest[..end])?;
            rest = &rest[end..];
        }
        Ok(())
    }

    /// `path.N`.
    fn numbered(&self, n: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(not_found_ok)?;
        } else {
            std::fs::remove_file(self.numbered(self.keep)).or_else(not_found_ok)?;
            for n in (1..self.keep).rev() {
                std::fs::rename(self.numbered(n), self.numbered(n + 1)).or_else(not_found_ok)?;
            }
            std::fs::rename(&self.path, self.numbered(1)).or_else(not_found_ok)?;
        }
        self.reopen()
    }
}

fn not_found_ok(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past `max_bytes` the file moves to `.1`, older ones move up, and
    /// only `keep` rotated files remain; no line is split across files.
    #[test]
    fn rotates_by_size_and_keeps_the_newest() {
        let dir = crate::testdir::TempDir::new("rotate");
        let path = dir.path().join("sub/access.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            f.write(format!("line {i:02} {}\n", "x".repeat(30)).as_bytes())
                .unwrap();
        }
        // A batch of lines is split between files at line ends.
        let batch: String = (10..20)
            .map(|i| format!("line {i:02} {}\n", "x".repeat(30)))
            .collect();
        f.write_lines(batch.as_bytes()).unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let current = read(&path);
        let one = read(&f.numbered(1));
        let two = read(&f.numbered(2));
        assert!(!f.numbered(3).exists(), "only two rotated files are kept");
        for text in [&current, &one, &two] {
            assert!(text.len() <= 100, "{} bytes", text.len());
            assert!(text.lines().all(|l| l.starts_with("line ")));
        }
        assert!(current.contains("line 19"));
        assert!(one.contains("line 17") || one.contains("line 16"));
        // Appending to an existing file continues its count.
        drop(f);
        let f = RotatingFile::open(&path, 100, 2).unwrap();
        assert_eq!(f.written, current.len() as u64);
    }
}
