//! The wire protocol is not part of the API.
use multiprocess::messenger::wire::Envelope;

fn main() {
    let _ = std::mem::size_of::<Envelope>();
}
