//! Option structs are built with their setters: they may gain fields.
fn main() {
    let _ = multiprocess::ServeOptions { idle_grace: std::time::Duration::ZERO };
}
