// The web UI's files and the migrations are embedded at compile time: a
// file added to or removed from `web/` or `migrations/` must rebuild the
// crate too (cargo watches those folders), not only an edit of a file
// already embedded.
fn main() {
    println!("cargo:rerun-if-changed=web");
    println!("cargo:rerun-if-changed=migrations");
}
