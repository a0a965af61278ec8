// The web UI's files are embedded at compile time: a file added to or
// removed from `web/` must rebuild the crate too (cargo watches the whole
// folder), not only an edit of a file already embedded.
fn main() {
    println!("cargo:rerun-if-changed=web");
}
