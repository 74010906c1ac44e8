//! Files that hold the gateway's own secrets: the assertion signing key, the admin token, the
//! TLS private key.
//!
//! Threat: a secret that other local users can read, and a secret file half written by a crash
//! (an empty admin token once made `"" == ""` true and opened the account API). Rules: a secret
//! is read only from a regular file that its owner alone may read, checked on the open file
//! (what is checked is what is read), and only up to a size bound; a new secret is written to a
//! temporary file (mode 0600), synced, then hard-linked into place, which never replaces a file
//! another process put there, and the directory entry is synced too. After a crash the file is
//! either absent or whole. OWASP ASVS 5 V13.3 (secret management).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the temporary files of this process, so that threads creating secrets at once never
/// share one. It counts from zero in every process, so a restart that gets the pid of a crashed
/// process meets that process's leftover and removes it.
static NEXT_TEMPORARY: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("it is not a regular file")]
    NotAFile,
    #[error("it has mode {0:04o}; it must be readable by its owner only (chmod 600)")]
    Permissions(u32),
    #[error("it is larger than {0} bytes")]
    TooLarge(u64),
    #[error("it is not text")]
    NotText,
}

impl SecretFileError {
    /// The file does not exist (the caller may create it).
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Io(error) if error.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Checks that the open `file` is a regular file only its owner can read.
fn check_private(file: &std::fs::File) -> Result<(), SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(SecretFileError::NotAFile);
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Permissions(mode));
    }
    Ok(())
}

/// Checks `path` as [`read`] would, without reading it (for files another library parses).
pub fn check(path: &Path) -> Result<(), SecretFileError> {
    check_private(&std::fs::File::open(path)?)
}

/// The text of the secret file at `path`, at most `max` bytes.
pub fn read(path: &Path, max: u64) -> Result<String, SecretFileError> {
    let file = std::fs::File::open(path)?;
    check_private(&file)?;
    let mut text = String::new();
    match file.take(max + 1).read_to_string(&mut text) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            return Err(SecretFileError::NotText);
        }
        Err(error) => return Err(error.into()),
    }
    if text.len() as u64 > max {
        return Err(SecretFileError::TooLarge(max));
    }
    Ok(text)
}

/// Creates `path` holding `contents` (mode 0600; missing parents get mode 0700), atomically and
/// durably. Fails with `AlreadyExists` when another process created the file first.
pub fn create_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    let number = NEXT_TEMPORARY.fetch_add(1, Ordering::Relaxed);
    name.push(format!(".{}-{number}.tmp", std::process::id()));
    let temporary = parent.join(name);
    // A leftover from a crash of an earlier process with the same id.
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&temporary, path));
    let removed = std::fs::remove_file(&temporary);
    written?;
    removed?;
    // Durable before anything that depends on the secret leaves the process.
    std::fs::File::open(parent).and_then(|dir| dir.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_files_are_private_whole_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        create_new(&path, b"s3cret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path, 64).unwrap(), "s3cret");
        let again = create_new(&path, b"other").unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(read(&path, 64).unwrap(), "s3cret");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["secret"]);
    }

    #[test]
    fn readable_by_others_too_large_or_not_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        create_new(&path, b"0123456789").unwrap();
        assert!(matches!(read(&path, 9), Err(SecretFileError::TooLarge(9))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read(&path, 64),
            Err(SecretFileError::Permissions(0o640))
        ));
        assert!(matches!(
            check(&path),
            Err(SecretFileError::Permissions(0o640))
        ));
        assert!(matches!(
            read(dir.path(), 64),
            Err(SecretFileError::NotAFile | SecretFileError::Permissions(_))
        ));
        assert!(
            read(&dir.path().join("absent"), 64)
                .unwrap_err()
                .is_missing()
        );
    }
}
