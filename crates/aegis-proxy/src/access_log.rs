//! Where access-log lines go: stdout, or a file that SIGUSR1 reopens, so that logrotate can
//! move the old file away and the proxy starts a new one without restarting.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The access log's destination, shared by every writer the log layer makes.
#[derive(Debug, Default)]
pub struct AccessSink {
    file: Mutex<Option<(PathBuf, File)>>,
}

impl AccessSink {
    /// A sink that writes to stdout until [`AccessSink::open`] is called.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Writes to `path` from now on (appending; the file is created if need be).
    pub fn open(&self, path: &Path) -> io::Result<()> {
        let file = append(path)?;
        *self.lock() = Some((path.to_owned(), file));
        Ok(())
    }

    /// Opens the file's path again: after logrotate renamed it, lines go to a new file.
    pub fn reopen(&self) -> io::Result<()> {
        let mut guard = self.lock();
        if let Some((path, file)) = guard.as_mut() {
            *file = append(path)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(PathBuf, File)>> {
        // A writer that panicked mid-line leaves nothing to repair: keep logging.
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One writer of an [`AccessSink`], as the log layer asks for one per line.
#[derive(Debug, Clone)]
pub struct AccessWriter(pub Arc<AccessSink>);

impl Write for AccessWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock().as_mut() {
            Some((_, file)) => file.write(buf),
            None => io::stdout().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // One line in one write, so that lines from several threads never interleave.
        match self.0.lock().as_mut() {
            Some((_, file)) => file.write_all(buf),
            None => io::stdout().lock().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.lock().as_mut() {
            Some((_, file)) => file.flush(),
            None => io::stdout().flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_starts_a_new_file_after_a_rename() {
        let dir = std::env::temp_dir().join(format!("aegis-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let sink = AccessSink::new();
        sink.open(&path).unwrap();
        let mut writer = AccessWriter(sink.clone());
        writer.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        // Until the reopen, lines follow the renamed file, as with nginx.
        writer.write_all(b"two\n").unwrap();
        sink.reopen().unwrap();
        writer.write_all(b"three\n").unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(read("access.log.1"), "one\ntwo\n");
        assert_eq!(read("access.log"), "three\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
