//! Whole-file transfers.
//!
//! - [`upload`]: two passes over the file so memory stays flat whatever
//!   its size: cut and hash every block, ask the server which it lacks, cut
//!   again and send only those, then commit the block list.
//! - [`batch`]: many small files in few requests.
//! - [`download`]: a file streamed (or assembled from local blocks) into a
//!   temporary file, hash-checked, fsynced and renamed: the target path
//!   never holds a partial or wrong file.
//! - [`resume`]: a download that keeps its bytes under a fixed name, so a
//!   later run asks only for the rest.
//! - [`stream`]: a file fetched while another device is still uploading
//!   it, each block as soon as it is stored.

use std::path::Path;
use std::sync::Arc;

use crate::remote::ClientError;

pub mod bases;
pub mod batch;
pub mod download;
pub mod limit;
pub mod resume;
pub mod stream;
pub mod upload;

pub use batch::{SMALL_FILE, SmallFile, upload_small_files};
pub use download::{
    DeltaReport, DownloadReport, LocalSite, download_assembling, download_file, download_into,
    sites_in_file,
};
pub use resume::{ResumeReport, download_resumable, part_paths};
pub use upload::{Base, PARALLEL_UPLOADS, UploadReport, upload_edit, upload_file};

/// zstd level for blocks the client sends.
pub const ZSTD_LEVEL: i32 = 3;

pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

fn blocking_err(e: tokio::task::JoinError) -> ClientError {
    ClientError::Io(std::io::Error::other(e.to_string()))
}

/// Fsyncs the folder holding `file`, so a rename into it survives a crash.
async fn fsync_parent(file: &Path) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    Ok(())
}
