//! The data folder is private to the server's user.
//!
//! It holds the database (password hashes, every file's path) and the
//! blocks. Created with the process's umask they were readable by every
//! local user (0755 / 0644); they are created 0700 / 0600 instead, like the
//! master key, and an existing installation with looser modes is tightened
//! at start (and the log says so).

use std::io;
use std::path::Path;

/// Creates `dir` (and missing parents) as 0700, or tightens it to 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        tighten(dir, 0o700)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Creates `file` empty as 0600 if it is missing (without touching its
/// contents otherwise), then tightens it to 0600.
pub fn private_file(file: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(file)?;
        tighten(file, 0o600)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(())
    }
}

/// Tightens `file` to 0600 if it exists.
pub fn tighten_if_present(file: &Path) -> io::Result<()> {
    if file.exists() {
        #[cfg(unix)]
        return tighten(file, 0o600);
    }
    Ok(())
}

#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let old = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if old & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        tracing::warn!(
            path = %path.display(),
            old = format!("{old:o}"),
            new = format!("{mode:o}"),
            "other local users could read this; its mode is tightened"
        );
    }
    Ok(())
}
