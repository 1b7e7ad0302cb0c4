//! The master's Hub is the supervisor's: a user cannot drain or detach workers behind its back.
fn main_bootstrap(master: &multiprocess::Master) {
    let _ = master.hub();
}

fn main() {
    let _ = main_bootstrap;
}
