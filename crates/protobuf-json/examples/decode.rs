//! Prints the JSON for protobuf bodies given as files: `cargo run -p protobuf-json --example
//! decode -- body.pb...`. A debugging aid for captured request bodies.

fn main() {
    for path in std::env::args().skip(1) {
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        match protobuf_json::decode(&body) {
            Ok((_, _, v)) => println!("{path}: {v}"),
            Err(e) => eprintln!("{path}: {e} (HTTP {})", e.status_code()),
        }
    }
}
