//! Prints time and memory figures for the lazily built schema and the generated documents.
//! `cargo bench -p openapi --bench memory`

fn main() {
    println!("memory bench placeholder");
}
