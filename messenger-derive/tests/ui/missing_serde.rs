use messenger::Event;

// Forgot `#[derive(Serialize, Deserialize)]`: events travel as MessagePack.
#[derive(Event)]
struct Ping;

fn main() {}
